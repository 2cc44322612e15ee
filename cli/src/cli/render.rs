//! Human-readable output: money, aligned tables, and the views of books,
//! orders and cluster state that the `bazar` commands print.
//!
//! Tables are plain text in the style of `kubectl` and `docker ps`: upper-case
//! headers, columns separated by two spaces, numbers right-aligned, no
//! trailing whitespace. Money is always integer cents on the wire and only
//! becomes dollars here.

use bazar_api::{Book, ClusterStatus, Digest, Group, NodeHealth, Order, WatchEvent};
use serde::Serialize;

use bazar_client::cluster::ClusterView;

/// Longest title shown in a table; JSON output always has the full title.
const MAX_TITLE_CHARS: usize = 48;

/// Formats cents as dollars: `1999` is `$19.99`, `123456789` is `$1,234,567.89`.
pub fn dollars(cents: u64) -> String {
    let whole = (cents / 100).to_string();
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("${grouped}.{:02}", cents % 100)
}

/// Shortens `s` to `max` characters, marking the cut with an ellipsis.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A column's alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// An aligned plain-text table.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with the given columns, all left-aligned.
    pub fn new(headers: &[&'static str]) -> Table {
        Table { headers: headers.to_vec(), align: vec![Align::Left; headers.len()], rows: vec![] }
    }

    /// Right-aligns the given columns.
    pub fn right(mut self, columns: &[usize]) -> Table {
        for &c in columns {
            self.align[c] = Align::Right;
        }
        self
    }

    /// Appends a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - width(cell);
                match self.align[i] {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Books as a table: ID, ISBN, TITLE, TOPIC, PRICE, STOCK.
pub fn books_table(books: &[Book]) -> String {
    let mut table = Table::new(&["ID", "ISBN", "TITLE", "TOPIC", "PRICE", "STOCK"]).right(&[0, 4, 5]);
    for b in books {
        table.row(vec![
            b.id.to_string(),
            b.isbn.clone(),
            truncate(&b.title, MAX_TITLE_CHARS),
            b.topic.clone(),
            dollars(b.price_cents),
            b.stock.to_string(),
        ]);
    }
    table.render()
}

/// Orders as a table.
pub fn orders_table(orders: &[Order]) -> String {
    let mut table = Table::new(&["ORDER", "BOOK", "BUYER", "QTY", "UNIT", "TOTAL", "STATUS", "REASON", "CREATED"])
        .right(&[0, 1, 3, 4, 5]);
    for o in orders {
        table.row(vec![
            o.order_id.to_string(),
            o.book_id.to_string(),
            or_dash(o.buyer.as_deref()),
            o.quantity.to_string(),
            dollars(o.unit_price_cents),
            dollars(o.total_cents),
            o.status.to_string(),
            or_dash(o.reason.as_deref()),
            o.created_at.clone(),
        ]);
    }
    table.render()
}

/// One sentence about a buy's order.
pub fn order_summary(o: &Order) -> String {
    let copies = if o.quantity == 1 { "copy" } else { "copies" };
    let mut line = format!(
        "order {} {}: {} {copies} of book {} at {} = {}",
        o.order_id,
        o.status,
        o.quantity,
        o.book_id,
        dollars(o.unit_price_cents),
        dollars(o.total_cents)
    );
    if let Some(buyer) = &o.buyer {
        line.push_str(&format!(" for {buyer}"));
    }
    if let Some(reason) = &o.reason {
        line.push_str(&format!(" ({reason})"));
    }
    line.push('\n');
    line
}

/// A node's `/cluster` answer: one line about the node, a table of groups,
/// and a table of members with their replication progress.
pub fn cluster_status(status: &ClusterStatus) -> String {
    let mut groups =
        Table::new(&["GROUP", "STATE", "TERM", "LEADER", "LAST LOG", "COMMITTED", "APPLIED", "SNAPSHOT", "PURGED"])
            .right(&[2, 3, 4, 5, 6, 7, 8]);
    let mut members = Table::new(&["GROUP", "NODE", "ADDR", "ROLE", "MATCHED", "LAG"]).right(&[1, 4, 5]);
    for g in &status.groups {
        groups.row(vec![
            g.group.to_string(),
            g.state.clone(),
            g.term.to_string(),
            or_dash(g.leader_id),
            or_dash(g.last_log_index),
            or_dash(g.committed_index),
            or_dash(g.applied_index),
            or_dash(g.snapshot_index),
            or_dash(g.purged_index),
        ]);
        for m in &g.members {
            let progress = g.replication.as_ref().and_then(|r| r.iter().find(|r| r.node_id == m.node_id));
            let role = if g.leader_id == Some(m.node_id) {
                "leader"
            } else if m.voter {
                "voter"
            } else {
                "learner"
            };
            members.row(vec![
                g.group.to_string(),
                m.node_id.to_string(),
                m.addr.clone(),
                role.to_string(),
                or_dash(progress.and_then(|p| p.matched_index)),
                or_dash(progress.map(|p| p.lag)),
            ]);
        }
    }
    format!("node {} at {}\n\n{}\n{}", status.node_id, status.addr, groups.render(), members.render())
}

/// The whole cluster: per group, its leader and progress; then every
/// member's role, progress and lag; then the nodes that did not answer.
pub fn cluster_view(view: &ClusterView) -> String {
    let mut groups = Table::new(&["GROUP", "LEADER", "TERM", "LAST LOG", "COMMITTED", "APPLIED", "VOTERS", "LEARNERS"])
        .right(&[1, 2, 3, 4, 5, 6, 7]);
    let mut members =
        Table::new(&["GROUP", "NODE", "ADDR", "ROLE", "TERM", "LAST LOG", "APPLIED", "SNAPSHOT", "MATCHED", "LAG"])
            .right(&[1, 4, 5, 6, 7, 8, 9]);
    for g in &view.groups {
        let voters = g.members.iter().filter(|m| m.voter).count();
        groups.row(vec![
            g.group.to_string(),
            or_dash(g.leader_id),
            g.term.to_string(),
            or_dash(g.last_log_index),
            or_dash(g.committed_index),
            or_dash(g.applied_index),
            voters.to_string(),
            (g.members.len() - voters).to_string(),
        ]);
        for m in &g.members {
            let role = if m.voter || m.role != "learner" { m.role.clone() } else { "learner".into() };
            let role = if !m.voter && m.role == "unreachable" { "learner (unreachable)".into() } else { role };
            let role = if m.state_lost.is_some() { format!("{role}, state lost") } else { role };
            members.row(vec![
                g.group.to_string(),
                m.node_id.to_string(),
                m.addr.clone(),
                role,
                or_dash(m.term),
                or_dash(m.last_log_index),
                or_dash(m.applied_index),
                or_dash(m.snapshot_index),
                or_dash(m.matched_index),
                or_dash(m.lag),
            ]);
        }
    }
    let mut text = format!("{}\n{}", groups.render(), members.render());
    let mut lost = std::collections::BTreeSet::new();
    for m in view.groups.iter().flat_map(|g| &g.members) {
        if let Some(why) = &m.state_lost
            && lost.insert(m.node_id)
        {
            text.push_str(&format!("STATE LOST: node {}: {why}\n", m.node_id));
        }
    }
    for u in &view.unreachable {
        let who = if u.node_id == 0 { u.addr.clone() } else { format!("node {} at {}", u.node_id, u.addr) };
        text.push_str(&format!("unreachable: {who}: {}\n", u.error));
    }
    text
}

/// One member's answer to `bazar cluster snapshot`.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRow {
    /// The group.
    pub group: Group,
    /// The member.
    pub node: u64,
    /// The index its snapshot now covers.
    pub snapshot_index: Option<u64>,
    /// Why it did not build one.
    pub error: Option<String>,
}

/// `bazar cluster snapshot` as a table.
pub fn snapshots_table(rows: &[SnapshotRow]) -> String {
    let mut table = Table::new(&["GROUP", "NODE", "SNAPSHOT", "ERROR"]).right(&[1, 2]);
    for r in rows {
        table.row(vec![
            r.group.to_string(),
            r.node.to_string(),
            or_dash(r.snapshot_index),
            r.error.clone().unwrap_or_default(),
        ]);
    }
    table.render()
}

/// A node's `/health` answer as a one-row table.
pub fn node_health(h: &NodeHealth) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    let leader = |g: Group| or_dash(h.leaders.get(&g).copied().flatten());
    let mut table = Table::new(&["NODE", "STATUS", "INITIALIZED", "SEEDED", "CATALOG LEADER", "ORDERS LEADER"]);
    table.row(vec![
        h.node_id.to_string(),
        h.status.clone(),
        yes_no(h.initialized),
        yes_no(h.catalog_seeded),
        leader(Group::Catalog),
        leader(Group::Orders),
    ]);
    table.render()
}

/// Digests as a table, so that several nodes' can be compared by eye.
pub fn digests_table(digests: &[Digest]) -> String {
    let mut table = Table::new(&["GROUP", "NODE", "APPLIED", "DIGEST"]).right(&[1, 2]);
    for d in digests {
        table.row(vec![d.group.to_string(), d.node_id.to_string(), d.applied_index.to_string(), d.digest.clone()]);
    }
    table.render()
}

/// One change event on one line.
pub fn watch_event(event: &WatchEvent) -> String {
    match event {
        WatchEvent::Applied { index, keys } => {
            format!("applied    index {index}  {}", keys.join(" "))
        }
        WatchEvent::Heartbeat { node_id, applied_index, commit_index, leader_id } => format!(
            "heartbeat  node {node_id}  applied {applied_index}  commit {commit_index}  leader {}",
            or_dash(*leader_id)
        ),
        WatchEvent::Reset { applied_index, reason } => {
            format!("reset      from {applied_index}  ({reason})")
        }
    }
}

/// A backup's manifest: what it holds and where.
pub fn backup_manifest(manifest: &bazar_api::backup::Manifest, file: &std::path::Path) -> String {
    let mut out = format!(
        "backup {} (taken {} from node {}, format {})\n",
        file.display(),
        manifest.created_at,
        manifest.node_id,
        manifest.format
    );
    out.push_str(&format!(
        "{:<8} {:>12} {:>6} {:>12} {:>14}  {}\n",
        "group", "applied", "term", "rows", "bytes", "digest"
    ));
    for g in &manifest.groups {
        out.push_str(&format!(
            "{:<8} {:>12} {:>6} {:>12} {:>14}  {}\n",
            g.group.as_str(),
            g.applied_index,
            g.applied_term,
            g.rows,
            g.bytes,
            g.digest
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_renders_as_dollars_and_cents() {
        assert_eq!(dollars(1999), "$19.99");
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(dollars(5), "$0.05");
        assert_eq!(dollars(100), "$1.00");
        assert_eq!(dollars(123_456_789), "$1,234,567.89");
        assert_eq!(dollars(100_000), "$1,000.00");
    }

    #[test]
    fn tables_align_columns_and_right_align_numbers() {
        let books = vec![
            Book {
                id: 1,
                isbn: "9780306406157".into(),
                title: "RPCs for Noobs".into(),
                topic: "distributed systems".into(),
                price_cents: 1999,
                stock: 1000,
            },
            Book {
                id: 12,
                isbn: "9780306406157".into(),
                title: "x".repeat(100),
                topic: "t".into(),
                price_cents: 5,
                stock: 7,
            },
        ];
        let text = books_table(&books);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  ISBN"), "{text}");
        assert!(lines[1].starts_with(" 1  9780306406157  RPCs for Noobs"), "{text}");
        assert!(lines[1].ends_with("$19.99   1000"), "{text}");
        assert!(lines[2].ends_with(" $0.05      7"), "{text}");
        assert!(lines[2].contains('…'), "long titles are cut: {text}");
        assert!(text.lines().all(|l| !l.ends_with(' ')));
    }
}
