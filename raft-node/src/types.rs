//! The vocabulary both Raft groups share: node ids, members (openraft's node
//! type here, with their incarnation), leader ids, log ids, memberships,
//! snapshot metadata and entries.
//!
//! A leaf: it depends on nothing else in the crate, so that the storage
//! ([`crate::store`]), the state machines ([`crate::sm`]) and the
//! incarnation protocol ([`crate::incarnation`], which explains what an
//! incarnation is for) can all name these without naming each other.

use std::fmt;

use openraft::impls::leader_id_adv::LeaderId;
use openraft::impls::{Entry, EntryPayload};
use openraft::{LogId, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Node ids are plain integers.
pub type NodeId = u64;

/// Leader ids: one leader per term and node ("advanced" mode), which is also
/// the committed leader id stored in log ids.
pub type GroupLeaderId = LeaderId<u64, NodeId>;
/// Log ids of both groups.
pub type GroupLogId = LogId<GroupLeaderId>;
/// A membership as recorded in the log or the state machine.
pub type GroupMembership = StoredMembership<GroupLeaderId, NodeId, Member>;
/// Snapshot metadata of both groups.
pub type GroupSnapshotMeta = SnapshotMeta<GroupLeaderId, NodeId, Member>;
/// The log entry type of a group whose commands are `D`.
pub type GroupEntry<D> = Entry<GroupLeaderId, EntryPayload<D, NodeId, Member>>;

/// A data directory's incarnation: random, never zero.
pub type Incarnation = u64;

/// Separates the address from the incarnation in the compact encoding; it
/// never appears in a host:port (add-learner checks addresses).
const SEPARATOR: char = '#';

/// How an incarnation is written: 16 hex digits.
pub fn hex(incarnation: Incarnation) -> String {
    format!("{incarnation:016x}")
}

/// Parses [`hex`]'s output.
pub fn parse_hex(s: &str) -> Option<Incarnation> {
    u64::from_str_radix(s.trim(), 16).ok()
}

/// A member of a group as the membership records it: where to reach it and
/// the incarnation of its data directory (`None`: recorded before
/// incarnations existed, not checked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// host:port of its HTTP server.
    pub addr: String,
    /// Its data directory's incarnation, when known.
    pub incarnation: Option<Incarnation>,
}

impl Member {
    /// A member at `addr` with `incarnation`.
    pub fn new(addr: impl Into<String>, incarnation: Option<Incarnation>) -> Member {
        Member { addr: addr.into(), incarnation }
    }

    fn compact(&self) -> String {
        match self.incarnation {
            None => self.addr.clone(),
            Some(i) => format!("{}{SEPARATOR}{}", self.addr, hex(i)),
        }
    }

    fn from_compact(s: &str) -> Member {
        // An old `BasicNode` is the address alone.
        match s.rsplit_once(SEPARATOR) {
            Some((addr, inc)) => match parse_hex(inc) {
                Some(i) => Member::new(addr, Some(i)),
                None => Member::new(s, None),
            },
            None => Member::new(s, None),
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.incarnation {
            None => write!(f, "{} (incarnation unknown)", self.addr),
            Some(i) => write!(f, "{} (incarnation {})", self.addr, hex(i)),
        }
    }
}

/// The JSON form of a [`Member`].
#[derive(Serialize, Deserialize)]
struct MemberJson {
    addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    incarnation: Option<String>,
}

impl Serialize for Member {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            MemberJson { addr: self.addr.clone(), incarnation: self.incarnation.map(hex) }.serialize(s)
        } else {
            s.serialize_str(&self.compact())
        }
    }
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Member, D::Error> {
        if d.is_human_readable() {
            let j = MemberJson::deserialize(d)?;
            let incarnation = match j.incarnation {
                None => None,
                Some(s) => Some(parse_hex(&s).ok_or_else(|| serde::de::Error::custom("bad incarnation"))?),
            };
            Ok(Member { addr: j.addr, incarnation })
        } else {
            let s = String::deserialize(d)?;
            Ok(Member::from_compact(&s))
        }
    }
}
