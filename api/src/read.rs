//! Read consistency levels.
//!
//! | level | who answers | guarantee |
//! |---|---|---|
//! | `linearizable` | any replica, after applying the leader's ReadIndex (confirmed by a heartbeat quorum) | reflects every write acknowledged before the read began |
//! | `lease` | any replica, after applying the index the leader hands out under its lease | the same, assuming bounded clock drift, without the quorum round trip |
//! | `cached` | the frontend's cache (a node answers from its local replica) | read-your-writes through one frontend, staleness bounded by `--max-staleness` |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Served from a cache or the local replica; bounded staleness.
    Cached,
    /// ReadIndex under the leader's lease.
    Lease,
    /// ReadIndex confirmed by a quorum.
    Linearizable,
}

impl Consistency {
    /// The level as it appears in `?consistency=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Cached => "cached",
            Consistency::Lease => "lease",
            Consistency::Linearizable => "linearizable",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cached" => Ok(Consistency::Cached),
            "lease" => Ok(Consistency::Lease),
            "linearizable" => Ok(Consistency::Linearizable),
            other => Err(format!("unknown consistency {other:?}: expected cached, lease or linearizable")),
        }
    }
}
