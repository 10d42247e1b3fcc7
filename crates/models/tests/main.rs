//! The integration tests of tailguard-models, one binary: each file below was its own test binary, and each
//! linked and instantiated the models for Flex again (minutes of CI's build per binary).

mod convolution;
mod interop;
mod models;
mod robustbench;
