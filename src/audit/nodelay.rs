//! Nagle's algorithm off on the database connections.
//!
//! sqlx 0.9.0 stopped setting `TCP_NODELAY` on the sockets it opens (sqlx issue 4335; fixed
//! upstream, not released) and offers no option to set it. With Nagle on, a small write
//! that follows another before its ACK waits for the server's delayed ACK: about one
//! issuance batch in eight then took ~40 ms instead of under 1 ms, and every request waiting
//! on that batch with it. Right after sqlx opens a connection, this turns Nagle off on every
//! TCP socket of the process whose peer is the database. Remove it once sqlx sets the option.

use std::net::SocketAddr;

/// Turns Nagle off on this process's TCP sockets connected to `host:port`. Best effort: a
/// socket it cannot inspect is left as it is.
pub async fn disable_towards(host: &str, port: u16) {
    let Ok(peers) = tokio::net::lookup_host((host, port)).await else {
        return;
    };
    let peers: Vec<SocketAddr> = peers.collect();
    if let Err(e) = set_on_matching_sockets(&peers) {
        tracing::debug!(error = %e, "could not inspect the process's sockets for TCP_NODELAY");
    }
}

#[cfg(target_os = "linux")]
fn set_on_matching_sockets(peers: &[SocketAddr]) -> std::io::Result<()> {
    use std::os::fd::{BorrowedFd, RawFd};
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: the descriptor was open when listed. Should another thread close it (and
        // the number be reused) before the calls below, they act on whatever it names then:
        // `getpeername` only reads, and Nagle is turned off only on a TCP socket whose peer
        // is the database, which is always wanted. No memory is involved.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let is_database = socket
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|peer| peers.contains(&peer));
        if is_database {
            socket.set_tcp_nodelay(true)?;
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_on_matching_sockets(_peers: &[SocketAddr]) -> std::io::Result<()> {
    Ok(())
}
