//! What a multi-machine run checks before it waits on anyone: that the orchestrator answers and that this node's
//! port is free, each within seconds and named in the error, instead of minutes of retries ending in a peer timeout.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};

/// `HOST:PORT` of a `ws://HOST:PORT[/path]` address.
fn host_and_port(url: &str, flag: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .with_context(|| format!("{flag} {url}: expected ws://HOST:PORT"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        bail!("{flag} {url}: expected ws://HOST:PORT with a port number");
    }
    Ok(authority.to_string())
}

fn resolve(url: &str, flag: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let authority = host_and_port(url, flag)?;
    let addresses: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .with_context(|| format!("{flag} {url}: cannot resolve {authority}"))?
        .collect();
    if addresses.is_empty() {
        bail!("{flag} {url}: {authority} resolves to no address");
    }
    Ok(addresses)
}

/// Connects to the orchestrator once, waiting at most `timeout`.
pub fn orchestrator_answers(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let mut last = None;
    for address in resolve(url, "--orchestrator")? {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    let reason = last.map(|e| e.to_string()).unwrap_or_default();
    bail!(
        "cannot reach the orchestrator at {url} within {:.0} s ({reason}): start `tailguard orchestrate --port PORT` \
         on that machine first, or check the address (--connect-timeout sets the wait)",
        timeout.as_secs_f64()
    )
}

/// Whether this node can listen on the port of its `--node-address`.
pub fn node_port_is_free(url: &str) -> anyhow::Result<()> {
    let authority = host_and_port(url, "--node-address")?;
    let port: u16 = authority.rsplit_once(':').map_or(0, |(_, p)| p.parse().unwrap_or(0));
    match TcpListener::bind(("0.0.0.0", port)) {
        Ok(_) => Ok(()),
        Err(e) => bail!("--node-address {url}: port {port} cannot be listened on here ({e}); choose a free port"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_port_and_a_busy_port_are_named_within_seconds() {
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        // Something listens: the orchestrator check passes, the node's port is taken.
        orchestrator_answers(&format!("ws://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        let taken = node_port_is_free(&format!("ws://127.0.0.1:{port}"))
            .unwrap_err()
            .to_string();
        assert!(taken.contains(&format!("port {port}")), "{taken}");
        drop(busy);
        let start = std::time::Instant::now();
        let closed = orchestrator_answers(&format!("ws://127.0.0.1:{port}"), Duration::from_secs(2))
            .unwrap_err()
            .to_string();
        assert!(closed.contains("cannot reach the orchestrator"), "{closed}");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(host_and_port("http://x:1", "--orchestrator").is_err());
        assert!(host_and_port("ws://x", "--orchestrator").is_err());
    }
}
