//! Where the devices of a data-parallel run are: how many in this process, how many machines, how to reach them.

use burn::config::Config;
use tailguard_collective::CollectiveConfig;

use crate::error::{InvalidSetting, TrainError};

/// How BatchNorm's running statistics are kept across the devices of a data-parallel run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunningStatistics {
    /// Each device keeps its own, moved by its own shards; checkpoints hold device 0's. (PyTorch DDP broadcasts rank
    /// 0's buffers before every forward pass, so its checkpoints also hold what rank 0 accumulated.)
    #[default]
    PerDevice,
    /// Averaged over every device at the end of every epoch, before validation and the checkpoint.
    Averaged,
}

/// A data-parallel layout. The default is one process with one device, which is plain single-device training.
#[derive(Config, Debug, PartialEq)]
pub struct DataParallelConfig {
    /// Devices in this process, one thread each.
    #[config(default = 1)]
    pub local_devices: usize,
    /// Machines (processes) taking part; every one runs `local_devices` devices.
    #[config(default = 1)]
    pub nodes: usize,
    /// This machine's index, 0-based; node 0 holds device 0, the writer.
    #[config(default = 0)]
    pub node_rank: usize,
    /// The orchestrator every node registers with, `ws://HOST:PORT` (several nodes only).
    #[config(default = "None")]
    pub orchestrator: Option<String>,
    /// Where the other nodes reach this one, `ws://HOST:PORT`; this node serves tensors on PORT (several nodes
    /// only).
    #[config(default = "None")]
    pub node_address: Option<String>,
    /// Seconds a device waits in one exchange before it declares a peer dead. It must exceed the longest work one
    /// device does alone between exchanges: device 0's validation pass and checkpoint at the end of an epoch.
    #[config(default = 600.0)]
    pub peer_timeout_seconds: f64,
    /// How BatchNorm's running statistics are kept.
    #[config(default = "RunningStatistics::PerDevice")]
    pub running_statistics: RunningStatistics,
}

impl DataParallelConfig {
    /// Every device of the run, all machines together.
    pub fn world(&self) -> usize {
        self.local_devices * self.nodes
    }

    /// Global rank of this process's `local`-th device.
    pub fn global_rank(&self, local: usize) -> usize {
        self.node_rank * self.local_devices + local
    }

    /// Checks the layout.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.local_devices == 0 {
            return Err(InvalidSetting::new("devices", "must list at least one device", 0));
        }
        if self.nodes == 0 {
            return Err(InvalidSetting::new("nodes", "must be at least 1", 0));
        }
        if self.node_rank >= self.nodes {
            return Err(InvalidSetting::new(
                "node_rank",
                "must be below the number of nodes",
                format!("{} of {} nodes", self.node_rank, self.nodes),
            ));
        }
        if !(self.peer_timeout_seconds > 0.0 && self.peer_timeout_seconds.is_finite()) {
            return Err(InvalidSetting::new(
                "peer_timeout",
                "must be a positive number of seconds",
                self.peer_timeout_seconds,
            ));
        }
        if self.nodes > 1 {
            let orchestrator = self.orchestrator.as_deref().unwrap_or("");
            if !orchestrator.starts_with("ws://") {
                return Err(InvalidSetting::new(
                    "orchestrator",
                    "must be ws://HOST:PORT with several nodes",
                    format!("{orchestrator:?}"),
                ));
            }
            self.data_port()?;
        } else if self.orchestrator.is_some() || self.node_address.is_some() {
            return Err(InvalidSetting::new(
                "nodes",
                "must be above 1 when an orchestrator or node address is given",
                self.nodes,
            ));
        }
        Ok(())
    }

    /// The port this node serves tensors on: the port of its node address.
    fn data_port(&self) -> Result<u16, InvalidSetting> {
        let address = self.node_address.as_deref().unwrap_or("");
        address
            .strip_prefix("ws://")
            .and_then(|rest| rest.rsplit_once(':'))
            .and_then(|(host, port)| (!host.is_empty()).then_some(port))
            .and_then(|port| port.trim_end_matches('/').parse::<u16>().ok())
            .ok_or_else(|| {
                InvalidSetting::new(
                    "node_address",
                    "must be ws://HOST:PORT with several nodes",
                    format!("{address:?}"),
                )
            })
    }

    /// burn-collective's configuration for this layout.
    pub(crate) fn collective(&self) -> Result<CollectiveConfig, TrainError> {
        self.validate()?;
        let config = CollectiveConfig::default().with_num_devices(self.local_devices);
        if self.nodes == 1 {
            return Ok(config);
        }
        let parse = |role: &'static str, text: &Option<String>| {
            let address = text.as_deref().unwrap_or_default();
            address.parse().map_err(|reason: String| TrainError::BadAddress {
                role,
                address: address.to_string(),
                reason,
            })
        };
        Ok(config
            .with_num_nodes(self.nodes as u32)
            .with_global_address(parse("orchestrator", &self.orchestrator)?)
            .with_node_address(parse("node", &self.node_address)?)
            .with_data_service_port(self.data_port()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_checked() {
        assert!(DataParallelConfig::new().validate().is_ok());
        assert_eq!(DataParallelConfig::new().with_local_devices(4).world(), 4);
        assert!(DataParallelConfig::new().with_local_devices(0).validate().is_err());
        assert!(
            DataParallelConfig::new()
                .with_nodes(2)
                .with_node_rank(2)
                .validate()
                .is_err()
        );
        let two = DataParallelConfig::new()
            .with_nodes(2)
            .with_node_rank(1)
            .with_local_devices(2)
            .with_orchestrator(Some("ws://10.0.0.1:3000".into()));
        // A second node needs its own reachable address with a port.
        assert!(two.validate().is_err());
        assert!(
            two.clone()
                .with_node_address(Some("ws://10.0.0.2".into()))
                .validate()
                .is_err()
        );
        let two = two.with_node_address(Some("ws://10.0.0.2:3001".into()));
        assert!(two.validate().is_ok());
        assert_eq!(two.data_port().unwrap(), 3001);
        assert_eq!((two.world(), two.global_rank(1)), (4, 3));
        assert!(two.collective().is_ok());
        // An orchestrator without several nodes is a mistake, not silently ignored.
        let one = DataParallelConfig::new().with_orchestrator(Some("ws://h:1".into()));
        assert!(one.validate().is_err());
        assert!(
            DataParallelConfig::new()
                .with_peer_timeout_seconds(0.0)
                .validate()
                .is_err()
        );
    }
}
