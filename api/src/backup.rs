//! Backup files: both groups' state, as `GET /admin/backup` streams it and
//! `bazar backup FILE` saves it, and what `bazar restore FILE` and a node
//! started with `--restore FILE` check before using one.
//!
//! Layout (lengths little-endian):
//!
//! ```text
//! "BZRBACK1"
//! one section per group, in the manifest's order, each a snapshot stream:
//!     "BZRSNAP1", u32 meta_len, meta, records (u32 len, key, u32 len, value)...,
//!     u32 0xFFFF_FFFF, 32-byte SHA-256 of the section
//! manifest (JSON, [`Manifest`]), u32 manifest_len
//! 32-byte SHA-256 of everything above
//! ```
//!
//! The manifest is at the end because a section's size and digest are known
//! only once it is written: the node streams the file as it reads its state.
//! Any damage (a flipped byte, a cut) fails the file's checksum; a cut also
//! loses the manifest. [`verify`] checks both and says which.

use std::io::{self, Read, Seek, SeekFrom};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::Group;

/// The first eight bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"BZRBACK1";
/// The version of the layout above, in [`Manifest::format`].
pub const FORMAT: u32 = 1;
/// Bytes after the manifest: its length and the file's checksum.
const TRAILER: u64 = 4 + 32;
/// A manifest is a few hundred bytes; anything larger is not one.
const MAX_MANIFEST: u32 = 1 << 20;

/// What a backup holds: written last in the file, and printed by
/// `bazar backup` and `bazar restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`FORMAT`]).
    pub format: u32,
    /// When the node read the state (RFC 3339, UTC).
    pub created_at: String,
    /// The node that read it (the orders leader then).
    pub node_id: u64,
    /// One entry per section, in file order.
    pub groups: Vec<GroupBackup>,
}

/// One group's section of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupBackup {
    /// Which group.
    pub group: Group,
    /// The log index of the last entry applied to the state backed up.
    pub applied_index: u64,
    /// The term of that entry.
    pub applied_term: u64,
    /// Rows of the state machine.
    pub rows: u64,
    /// Bytes of the section in the file.
    pub bytes: u64,
    /// The state's digest, as `GET /admin/digest/{group}` computes it on a
    /// replica at `applied_index`.
    pub digest: String,
}

impl Manifest {
    /// The section of `group`, if the backup has one.
    pub fn group(&self, group: Group) -> Option<&GroupBackup> {
        self.groups.iter().find(|g| g.group == group)
    }
}

/// Why a file is not a usable backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading the file failed.
    #[error("cannot read the backup: {0}")]
    Io(#[from] io::Error),
    /// Not a Bazar backup at all.
    #[error("not a Bazar backup file (it does not start with \"{}\")", String::from_utf8_lossy(MAGIC))]
    NotABackup,
    /// Shorter than its own framing says: cut off while copied or written.
    #[error("the backup is truncated: {0}")]
    Truncated(String),
    /// The checksum does not match: damaged after it was written.
    #[error("the backup is corrupted: its SHA-256 is {computed}, but the file records {recorded}")]
    ChecksumMismatch {
        /// What the bytes hash to.
        computed: String,
        /// What the file says they should hash to.
        recorded: String,
    },
    /// The checksum matches but the contents are not a valid backup.
    #[error("the backup is malformed: {0}")]
    Malformed(String),
}

/// Checks a whole backup file from its start: its magic, its checksum and
/// its manifest; returns the manifest. Reads the file once. Sections are
/// checked in detail by the node that restores them.
pub fn verify<R: Read + Seek>(file: &mut R) -> Result<Manifest, BackupError> {
    let len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    if len < MAGIC.len() as u64 {
        return Err(if len == 0 {
            BackupError::Truncated("the file is empty".into())
        } else {
            BackupError::NotABackup
        });
    }
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(BackupError::NotABackup);
    }
    if len < MAGIC.len() as u64 + TRAILER {
        return Err(BackupError::Truncated(format!("{len} bytes, less than an empty backup")));
    }
    let body = len - 32;
    let mut hasher = Sha256::new();
    hasher.update(magic);
    io::copy(&mut io::BufReader::with_capacity(1 << 20, (&mut *file).take(body - MAGIC.len() as u64)), &mut hasher)?;
    let mut recorded = [0u8; 32];
    file.read_exact(&mut recorded)?;
    // The manifest and its length end the body.
    let tail_len = (MAX_MANIFEST as u64 + 4).min(body - MAGIC.len() as u64);
    file.seek(SeekFrom::Start(body - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact(&mut tail)?;
    let computed = hasher.finalize();
    let manifest = parse_manifest(&tail);
    if computed.as_slice() != recorded {
        // A cut file has no manifest where one should end it; a damaged one
        // still has one (perhaps itself damaged).
        return Err(if ends_with_manifest(&tail) {
            BackupError::ChecksumMismatch { computed: hex(&computed), recorded: hex(&recorded) }
        } else {
            BackupError::Truncated(format!(
                "{len} bytes that do not end with a manifest and a checksum; was it cut off while written or copied?"
            ))
        });
    }
    let (manifest, manifest_len) = manifest?;
    if manifest.format != FORMAT {
        return Err(BackupError::Malformed(format!("format {} (this version reads format {FORMAT})", manifest.format)));
    }
    let sections: u64 = manifest.groups.iter().map(|g| g.bytes).sum();
    if MAGIC.len() as u64 + sections + manifest_len as u64 + TRAILER != len {
        return Err(BackupError::Malformed(format!(
            "the manifest's sections add up to {sections} bytes; the file has room for {}",
            len - MAGIC.len() as u64 - manifest_len as u64 - TRAILER
        )));
    }
    Ok(manifest)
}

/// Whether `tail` ends the way a backup's body does: a JSON object of a
/// plausible length, then that length. A file cut anywhere almost never
/// does; one with a byte flipped still does.
fn ends_with_manifest(tail: &[u8]) -> bool {
    let Some(len_at) = tail.len().checked_sub(4) else {
        return false;
    };
    let len = u32::from_le_bytes(tail[len_at..].try_into().expect("four bytes")) as usize;
    len >= 2 && len <= MAX_MANIFEST as usize && len <= len_at && tail[len_at - len] == b'{' && tail[len_at - 1] == b'}'
}

/// The manifest that ends `tail` (the last bytes before the checksum), and its length.
fn parse_manifest(tail: &[u8]) -> Result<(Manifest, u32), BackupError> {
    let Some(len_at) = tail.len().checked_sub(4) else {
        return Err(BackupError::Malformed("no room for a manifest".into()));
    };
    let manifest_len = u32::from_le_bytes(tail[len_at..].try_into().expect("four bytes"));
    if manifest_len > MAX_MANIFEST || manifest_len as usize > len_at {
        return Err(BackupError::Malformed(format!("a manifest of {manifest_len} bytes")));
    }
    let manifest = serde_json::from_slice(&tail[len_at - manifest_len as usize..len_at])
        .map_err(|e| BackupError::Malformed(format!("unreadable manifest: {e}")))?;
    Ok((manifest, manifest_len))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A well-formed backup of one fake section.
    fn backup() -> Vec<u8> {
        let section = b"BZRSNAP1 pretend section".to_vec();
        let manifest = Manifest {
            format: FORMAT,
            created_at: "2026-12-05T08:00:00Z".into(),
            node_id: 1,
            groups: vec![GroupBackup {
                group: Group::Orders,
                applied_index: 7,
                applied_term: 2,
                rows: 0,
                bytes: section.len() as u64,
                digest: "d".into(),
            }],
        };
        let json = serde_json::to_vec(&manifest).unwrap();
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&section);
        file.extend_from_slice(&json);
        file.extend_from_slice(&(json.len() as u32).to_le_bytes());
        let sum = Sha256::digest(&file);
        file.extend_from_slice(&sum);
        file
    }

    #[test]
    fn a_whole_backup_is_accepted_and_every_damage_is_named() {
        let good = backup();
        assert_eq!(verify(&mut Cursor::new(&good)).unwrap().groups[0].applied_index, 7);

        for at in [9, good.len() / 2, good.len() - 40, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            let err = verify(&mut Cursor::new(&bad)).unwrap_err();
            assert!(matches!(err, BackupError::ChecksumMismatch { .. }), "byte {at}: {err}");
            assert!(err.to_string().starts_with("the backup is corrupted"), "{err}");
        }
        for keep in [good.len() - 1, good.len() - 33, good.len() / 2, 20] {
            let err = verify(&mut Cursor::new(&good[..keep])).unwrap_err();
            assert!(matches!(err, BackupError::Truncated(_)), "{keep}: {err}");
            assert!(err.to_string().starts_with("the backup is truncated"), "{err}");
        }
        assert!(matches!(verify(&mut Cursor::new(&good[..0])).unwrap_err(), BackupError::Truncated(_)));
        assert!(matches!(verify(&mut Cursor::new(b"BZRSNAP1 and more bytes")).unwrap_err(), BackupError::NotABackup));
    }
}
