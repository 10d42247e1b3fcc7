//! Loops compiled for the widest vector unit the CPU has.

/// Defines a function whose body is compiled three times, for AVX-512, for AVX2 and for the build's target, and runs
/// the widest the CPU has (checked at run time, a cached flag). The crate is built for baseline x86-64, whose 4-wide
/// SSE vectors would leave its element-wise loops at a fraction of the speed of the products around them; gemm picks
/// its kernels the same way. The body must be free of `return` (it is the body of an inner function).
macro_rules! widest_vectors {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident $(<$generic:ident: $bound:path>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
        $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name $(<$generic: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn run $(<$generic: $bound>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512 $(<$generic: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                    run($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2 $(<$generic: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                    run($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked on the line above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked on the line above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            run($($arg),*)
        }
    };
}

pub(crate) use widest_vectors;
