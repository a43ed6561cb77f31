//! Connections per peer address on a network listener, so one address
//! cannot take every handshake slot or connection and starve the others:
//! a flood of silent TCP connections from one host used to hold the
//! listener's handshake slots for their whole timeout while the
//! coordinator's connections waited behind them.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

/// The two stages of a connection, each with its own cap per address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Accepted, TLS handshake in progress.
    Handshake,
    /// Handshaken, serving calls.
    Established,
}

/// Caps per peer address, and on handshakes in all.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub handshakes_per_peer: usize,
    pub handshakes: usize,
    pub connections_per_peer: usize,
}

#[derive(Debug, Default)]
struct Counts {
    handshakes: usize,
    established: usize,
    /// Whether the address was told (logged) it hit a cap since its
    /// counts were last zero: one line per episode, not per connection.
    warned: bool,
}

#[derive(Debug, Default)]
struct Table {
    peers: HashMap<IpAddr, Counts>,
    handshakes: usize,
}

/// The table of one listener.
#[derive(Clone, Debug)]
pub struct Peers {
    limits: Limits,
    table: Arc<Mutex<Table>>,
}

/// Why a connection was refused; `first` is true the first time the
/// address hit a cap since it last had no connection (log that one).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: String,
    pub first: bool,
}

impl Peers {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            table: Arc::default(),
        }
    }

    /// A slot for a connection from `ip` in `stage`, or why not. Dropping
    /// the slot frees it.
    pub fn admit(&self, ip: IpAddr, stage: Stage) -> Result<Slot, Refused> {
        let mut t = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total = t.handshakes;
        let counts = t.peers.entry(ip).or_default();
        let refused = match stage {
            Stage::Handshake if counts.handshakes >= self.limits.handshakes_per_peer => {
                Some(format!(
                    "{} TLS handshakes from {ip} already in progress (the limit per address)",
                    counts.handshakes
                ))
            }
            Stage::Handshake if total >= self.limits.handshakes => Some(format!(
                "{total} TLS handshakes already in progress (the listener's limit)"
            )),
            Stage::Established if counts.established >= self.limits.connections_per_peer => {
                Some(format!(
                    "{} connections from {ip} already open (the limit per address)",
                    counts.established
                ))
            }
            _ => None,
        };
        if let Some(reason) = refused {
            let first = !counts.warned;
            counts.warned = true;
            if counts.handshakes == 0 && counts.established == 0 {
                t.peers.remove(&ip);
            }
            return Err(Refused { reason, first });
        }
        match stage {
            Stage::Handshake => {
                counts.handshakes += 1;
                t.handshakes += 1;
            }
            Stage::Established => counts.established += 1,
        }
        Ok(Slot {
            table: Arc::clone(&self.table),
            ip,
            stage,
        })
    }
}

/// A connection's place in the table, held for as long as it lives.
#[derive(Debug)]
pub struct Slot {
    table: Arc<Mutex<Table>>,
    ip: IpAddr,
    stage: Stage,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.stage == Stage::Handshake {
            t.handshakes = t.handshakes.saturating_sub(1);
        }
        if let Some(c) = t.peers.get_mut(&self.ip) {
            match self.stage {
                Stage::Handshake => c.handshakes = c.handshakes.saturating_sub(1),
                Stage::Established => c.established = c.established.saturating_sub(1),
            }
            if c.handshakes == 0 && c.established == 0 {
                t.peers.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_address_cannot_take_every_slot() {
        let peers = Peers::new(Limits {
            handshakes_per_peer: 2,
            handshakes: 3,
            connections_per_peer: 1,
        });
        let a1 = peers.admit(ip(1), Stage::Handshake).expect("first");
        let _a2 = peers.admit(ip(1), Stage::Handshake).expect("second");
        let refused = peers
            .admit(ip(1), Stage::Handshake)
            .expect_err("third from a");
        assert!(refused.reason.contains("per address"), "{refused:?}");
        assert!(refused.first);
        assert!(
            !peers
                .admit(ip(1), Stage::Handshake)
                .expect_err("again")
                .first
        );
        // Another address still gets in, up to the listener's total.
        let _b = peers.admit(ip(2), Stage::Handshake).expect("b");
        let total = peers.admit(ip(3), Stage::Handshake).expect_err("total");
        assert!(total.reason.contains("listener's limit"), "{total:?}");
        // A handshake that ends frees its slot.
        drop(a1);
        let _c = peers.admit(ip(3), Stage::Handshake).expect("freed");
        // Established connections have their own cap.
        let e = peers.admit(ip(4), Stage::Established).expect("one");
        assert!(peers.admit(ip(4), Stage::Established).is_err());
        drop(e);
        assert!(peers.admit(ip(4), Stage::Established).is_ok());
    }

    #[test]
    fn the_table_forgets_idle_addresses() {
        let peers = Peers::new(Limits {
            handshakes_per_peer: 1,
            handshakes: 10,
            connections_per_peer: 1,
        });
        for last in 0..=255 {
            drop(peers.admit(ip(last), Stage::Handshake).expect("slot"));
            let _ = peers.admit(ip(last), Stage::Established).map(drop);
        }
        let t = peers.table.lock().expect("lock");
        assert!(t.peers.is_empty() && t.handshakes == 0, "{t:?}");
    }
}
