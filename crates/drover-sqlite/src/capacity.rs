//! The SQL of the autoscaler's slots and reservations.

use drover_core::{
    ReservationAssignment, ReservationCount, ReservationListParams, ReservationPhase,
    ReservationRecord, SlotId, SlotListParams, SlotRecord, SlotState, SlotTransitionParams,
};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::time::{from_text, plus, to_text};

const SLOT_COLUMNS: &str = "id, system, state, instance_id, generation, leases, failures, reason, \
     created_at, launched_at, state_changed_at, last_used_at, notice_at";

fn opt_time(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<Timestamp>> {
    row.get::<_, Option<String>>(i)?
        .map(|text| from_text(&text))
        .transpose()
}

fn parse<T: std::str::FromStr<Err = String>>(text: String) -> rusqlite::Result<T> {
    text.parse().map_err(|err: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, err.into())
    })
}

fn slot_row(row: &Row<'_>) -> rusqlite::Result<SlotRecord> {
    Ok(SlotRecord {
        id: row.get(0)?,
        system: row.get(1)?,
        state: parse(row.get(2)?)?,
        instance_id: row.get(3)?,
        generation: row.get(4)?,
        leases: row.get(5)?,
        failures: row.get(6)?,
        reason: row.get(7)?,
        created_at: from_text(&row.get::<_, String>(8)?)?,
        launched_at: opt_time(row, 9)?,
        state_changed_at: from_text(&row.get::<_, String>(10)?)?,
        last_used_at: from_text(&row.get::<_, String>(11)?)?,
        notice_at: opt_time(row, 12)?,
    })
}

pub(crate) fn slot_insert(
    conn: &Connection,
    system: &str,
    reason: &str,
    now: Timestamp,
) -> rusqlite::Result<SlotRecord> {
    conn.prepare_cached(&format!(
        "INSERT INTO drover_slots (system, state, generation, reason, created_at, launched_at, \
             state_changed_at, last_used_at) \
         VALUES (?1, 'launching', 1, ?2, ?3, ?3, ?3, ?3) RETURNING {SLOT_COLUMNS}"
    ))?
    .query_row(params![system, reason, to_text(now)], slot_row)
}

pub(crate) fn slot_transition(
    conn: &Connection,
    p: &SlotTransitionParams,
    now: Timestamp,
) -> rusqlite::Result<Option<SlotRecord>> {
    let to = p.to;
    let hand_back = p.hand_back || matches!(to, SlotState::Empty | SlotState::Error);
    let now_text = to_text(now);
    let updated = conn
        .prepare_cached(&format!(
            "UPDATE drover_slots SET state = ?4, reason = ?5, state_changed_at = ?6, \
                 generation = generation + (?4 = 'launching'), \
                 launched_at = CASE WHEN ?4 = 'launching' THEN ?6 ELSE launched_at END, \
                 instance_id = CASE WHEN ?7 IS NOT NULL THEN ?7 \
                     WHEN ?4 = 'launching' OR ?4 = 'empty' OR ?4 = 'error' THEN NULL \
                     ELSE instance_id END, \
                 notice_at = CASE WHEN ?8 IS NOT NULL THEN ?8 \
                     WHEN ?4 = 'launching' THEN NULL ELSE notice_at END, \
                 failures = CASE WHEN ?4 = 'ready' THEN 0 WHEN ?4 = 'error' THEN failures + 1 \
                     ELSE failures END, \
                 last_used_at = CASE WHEN ?4 = 'ready' THEN ?6 ELSE last_used_at END, \
                 leases = CASE WHEN ?9 THEN 0 ELSE leases END \
             WHERE id = ?1 AND state = ?2 AND generation = ?3 RETURNING {SLOT_COLUMNS}"
        ))?
        .query_row(
            params![
                p.id,
                p.from.as_str(),
                p.generation,
                to.as_str(),
                p.reason,
                now_text,
                p.instance_id,
                p.notice_at.map(to_text),
                hand_back,
            ],
            slot_row,
        )
        .optional()?;
    if updated.is_some() && hand_back {
        conn.prepare_cached(
            "UPDATE drover_reservations SET phase = 'pending', slot_id = NULL \
             WHERE phase = 'assigned' AND slot_id = ?1",
        )?
        .execute([p.id])?;
    }
    Ok(updated)
}

pub(crate) fn slot_list(
    conn: &Connection,
    p: &SlotListParams,
) -> rusqlite::Result<Vec<SlotRecord>> {
    let states: Vec<&str> = p.states.iter().map(|s| s.as_str()).collect();
    let states = serde_json::to_string(&states).expect("strings serialize");
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SLOT_COLUMNS} FROM drover_slots \
         WHERE (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR system = ?2) \
           AND (?3 = '[]' OR state IN (SELECT value FROM json_each(?3))) \
         ORDER BY id"
    ))?;
    stmt.query_map(params![p.id, p.system, states], slot_row)?
        .collect()
}

const RESERVATION_COLUMNS: &str = "r.id, r.system, r.phase, r.holder, r.slot_id, s.instance_id, \
     r.created_at, r.expires_at, r.assigned_at, r.finished_at";

fn reservation_row(row: &Row<'_>) -> rusqlite::Result<ReservationRecord> {
    let phase: ReservationPhase = parse(row.get(2)?)?;
    Ok(ReservationRecord {
        id: row.get(0)?,
        system: row.get(1)?,
        phase,
        holder: row.get(3)?,
        slot_id: row.get(4)?,
        instance_id: if phase == ReservationPhase::Assigned {
            row.get(5)?
        } else {
            None
        },
        created_at: from_text(&row.get::<_, String>(6)?)?,
        expires_at: from_text(&row.get::<_, String>(7)?)?,
        assigned_at: opt_time(row, 8)?,
        finished_at: opt_time(row, 9)?,
    })
}

pub(crate) fn reservation_get(
    conn: &Connection,
    id: i64,
) -> rusqlite::Result<Option<ReservationRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM drover_reservations r \
         LEFT JOIN drover_slots s ON s.id = r.slot_id WHERE r.id = ?1"
    ))?
    .query_row([id], reservation_row)
    .optional()
}

pub(crate) fn reservation_insert(
    conn: &Connection,
    system: &str,
    holder: &str,
    ttl: std::time::Duration,
    now: Timestamp,
) -> rusqlite::Result<ReservationRecord> {
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO drover_reservations (system, phase, holder, created_at, expires_at) \
             VALUES (?1, 'pending', ?2, ?3, ?4) RETURNING id",
        )?
        .query_row(
            params![system, holder, to_text(now), to_text(plus(now, ttl))],
            |row| row.get(0),
        )?;
    Ok(reservation_get(conn, id)?.expect("just inserted"))
}

pub(crate) fn reservation_assign(
    conn: &Connection,
    assignments: &[ReservationAssignment],
    now: Timestamp,
) -> rusqlite::Result<Vec<bool>> {
    let now = to_text(now);
    let mut take_lease = conn.prepare_cached(
        "UPDATE drover_slots SET leases = leases + 1, last_used_at = ?3 \
         WHERE id = ?1 AND state = 'ready' AND leases < ?2 \
           AND system = (SELECT system FROM drover_reservations WHERE id = ?4 \
                         AND phase = 'pending' AND expires_at > ?3)",
    )?;
    let mut assign = conn.prepare_cached(
        "UPDATE drover_reservations SET phase = 'assigned', slot_id = ?2, assigned_at = ?3 \
         WHERE id = ?1",
    )?;
    let mut results = Vec::with_capacity(assignments.len());
    for a in assignments {
        // The lease is taken only if the reservation is still pending and of the slot's system,
        // so one check covers both rows.
        let taken = take_lease.execute(params![a.slot, a.max_leases, now, a.reservation])? == 1;
        if taken {
            assign.execute(params![a.reservation, a.slot, now])?;
        }
        results.push(taken);
    }
    Ok(results)
}

/// Gives back the leases of assigned reservations leaving `assigned` (their slots, before the
/// phase change).
fn give_back_leases(conn: &Connection, slots: &[SlotId], now: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "UPDATE drover_slots SET leases = max(leases - 1, 0), last_used_at = ?2 WHERE id = ?1",
    )?;
    for slot in slots {
        stmt.execute(params![slot, now])?;
    }
    Ok(())
}

pub(crate) fn reservation_release(
    conn: &Connection,
    id: i64,
    now: Timestamp,
) -> rusqlite::Result<Option<ReservationRecord>> {
    let now = to_text(now);
    let released: Option<Option<SlotId>> = conn
        .prepare_cached(
            "UPDATE drover_reservations SET phase = 'released', finished_at = ?2 \
             WHERE id = ?1 AND (phase = 'pending' OR phase = 'assigned') \
             RETURNING slot_id",
        )?
        .query_row(params![id, now], |row| row.get(0))
        .optional()?;
    if let Some(Some(slot)) = released {
        give_back_leases(conn, &[slot], &now)?;
    }
    reservation_get(conn, id)
}

pub(crate) fn reservation_expire(conn: &Connection, now: Timestamp) -> rusqlite::Result<u64> {
    let now = to_text(now);
    let mut stmt = conn.prepare_cached(
        "UPDATE drover_reservations SET phase = 'expired', finished_at = ?1 \
         WHERE (phase = 'pending' OR phase = 'assigned') AND expires_at <= ?1 \
         RETURNING slot_id",
    )?;
    let slots = stmt
        .query_map([&now], |row| row.get::<_, Option<SlotId>>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let expired = slots.len() as u64;
    let held: Vec<SlotId> = slots.into_iter().flatten().collect();
    give_back_leases(conn, &held, &now)?;
    Ok(expired)
}

pub(crate) fn reservation_list(
    conn: &Connection,
    p: &ReservationListParams,
) -> rusqlite::Result<Vec<ReservationRecord>> {
    let phases: Vec<&str> = p.phases.iter().map(|s| s.as_str()).collect();
    let phases = serde_json::to_string(&phases).expect("strings serialize");
    let limit = if p.limit == 0 { -1 } else { p.limit as i64 };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM drover_reservations r \
         LEFT JOIN drover_slots s ON s.id = r.slot_id \
         WHERE (?1 IS NULL OR r.id = ?1) AND (?2 IS NULL OR r.system = ?2) \
           AND (?3 = '[]' OR r.phase IN (SELECT value FROM json_each(?3))) \
         ORDER BY r.id LIMIT ?4"
    ))?;
    stmt.query_map(params![p.id, p.system, phases, limit], reservation_row)?
        .collect()
}

pub(crate) fn reservation_count(conn: &Connection) -> rusqlite::Result<Vec<ReservationCount>> {
    let mut stmt = conn.prepare_cached(
        "SELECT system, phase, count(*) FROM drover_reservations \
         WHERE (phase = 'pending' OR phase = 'assigned') GROUP BY system, phase \
         ORDER BY system, phase",
    )?;
    stmt.query_map([], |row| {
        Ok(ReservationCount {
            system: row.get(0)?,
            phase: parse(row.get(1)?)?,
            count: row.get(2)?,
        })
    })?
    .collect()
}
