//! `bench-delay`: a TCP relay that holds every byte for a fixed time, each
//! way, to give Bazar's benchmarks a network with round trips.
//!
//! Loopback has none, and the kernel here has no `netem` queueing
//! discipline to add them, so `scripts/bench.sh` puts one relay in front of
//! each member of a cluster (Bazar's nodes, etcd's members) and has the
//! members and their clients dial the relays. A relay delays what it reads
//! by `--delay` before writing it on, in both directions, so a request and
//! its answer between two members cost one round trip of twice the delay.
//! Order is kept: bytes leave in the order they came, each no earlier than
//! its arrival plus the delay (a link with latency and no bandwidth limit).
//!
//! Every connection gets four threads (a reader and a writer per direction),
//! so that the delay is kept to the precision of the kernel's sleep, not of
//! an async runtime's timer wheel (a millisecond in tokio's).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bazar_cli::bench::parse_duration;
use clap::Parser;

/// A delaying TCP relay: LISTEN=TARGET pairs, one delay for all.
#[derive(Debug, Parser)]
#[command(name = "bench-delay", version)]
struct Args {
    /// How long each byte is held, in each direction (a round trip through
    /// the relay takes twice this), e.g. 0.5ms or 5ms.
    #[arg(long, value_parser = parse_duration)]
    delay: Duration,
    /// Relays, each LISTEN=TARGET, e.g. 127.0.3.1:7601=127.0.0.11:7601.
    #[arg(required = true, value_parser = parse_route)]
    routes: Vec<(SocketAddr, SocketAddr)>,
}

fn parse_route(text: &str) -> Result<(SocketAddr, SocketAddr), String> {
    let (listen, target) = text.split_once('=').ok_or_else(|| format!("{text:?} is not LISTEN=TARGET"))?;
    let addr = |a: &str| a.trim().parse::<SocketAddr>().map_err(|e| format!("{a:?} in {text:?}: {e}"));
    Ok((addr(listen)?, addr(target)?))
}

fn main() {
    let args = Args::parse();
    let mut listeners = Vec::new();
    for (listen, target) in &args.routes {
        match TcpListener::bind(listen) {
            Ok(l) => listeners.push((l, *target)),
            Err(e) => {
                eprintln!("bench-delay: cannot listen on {listen}: {e}");
                std::process::exit(1);
            }
        }
    }
    eprintln!("bench-delay: {} relay(s), holding each byte {:?} each way", listeners.len(), args.delay);
    let delay = args.delay;
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|(listener, target)| thread::spawn(move || accept(listener, target, delay)))
        .collect();
    for t in accepting {
        let _ = t.join();
    }
}

fn accept(listener: TcpListener, target: SocketAddr, delay: Duration) {
    for incoming in listener.incoming() {
        let Ok(client) = incoming else { continue };
        thread::spawn(move || {
            let Ok(server) = TcpStream::connect(target) else {
                let _ = client.shutdown(Shutdown::Both);
                return;
            };
            for s in [&client, &server] {
                let _ = s.set_nodelay(true);
            }
            let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { return };
            relay(client, s2, delay);
            relay(server, c2, delay);
        });
    }
}

/// Copies `from` to `to`, each chunk held until `delay` after it was read.
fn relay(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send((Instant::now() + delay, None));
                    return;
                }
                Ok(n) => {
                    if tx.send((Instant::now() + delay, Some(buf[..n].to_vec()))).is_err() {
                        let _ = from.shutdown(Shutdown::Read);
                        return;
                    }
                }
            }
        }
    });
    thread::spawn(move || {
        while let Ok((due, chunk)) = rx.recv() {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            match chunk {
                Some(bytes) if to.write_all(&bytes).is_ok() => {}
                _ => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_as_listen_equals_target() {
        let (l, t) = parse_route("127.0.3.1:7601=127.0.0.11:7601").unwrap();
        assert_eq!((l.port(), t.to_string().as_str()), (7601, "127.0.0.11:7601"));
        assert!(parse_route("127.0.0.1:1").is_err());
        assert!(parse_route("x=127.0.0.1:1").is_err());
    }

    #[test]
    fn a_round_trip_through_the_relay_takes_twice_the_delay_and_keeps_the_bytes() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let front_addr = front.local_addr().unwrap();
        let delay = Duration::from_millis(20);
        thread::spawn(move || accept(front, echo_addr, delay));
        let mut c = TcpStream::connect(front_addr).unwrap();
        c.set_nodelay(true).unwrap();
        for round in 0..3u8 {
            let started = Instant::now();
            c.write_all(&[round, 1, 2, 3]).unwrap();
            let mut got = [0u8; 4];
            c.read_exact(&mut got).unwrap();
            let took = started.elapsed();
            assert_eq!(got, [round, 1, 2, 3]);
            // Held once each way: at least the two delays, whatever the load.
            assert!(took >= 2 * delay, "round {round} took {took:?}");
        }
    }
}
