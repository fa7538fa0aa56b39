//! The SQL of the autoscaler's slots and reservations. Times follow the database clock unless
//! the caller pins `now`.

use drover_core::{
    ReservationAssignment, ReservationCount, ReservationListParams, ReservationPhase,
    ReservationRecord, SlotInsertParams, SlotListParams, SlotRecord, SlotState,
    SlotTransitionParams, StoreError,
};
use jiff::Timestamp;
use tokio_postgres::Row;

use crate::error::DbError;
use crate::session::Db;
use crate::time::{clock, micros};

macro_rules! slot_columns {
    () => {
        "id, system, state, instance_id, generation, leases, failures, reason, created_at, \
         launched_at, state_changed_at, last_used_at, notice_at"
    };
}

fn parse<T: std::str::FromStr<Err = String>>(text: &str) -> Result<T, DbError> {
    text.parse()
        .map_err(|err: String| DbError::Store(StoreError::Internal(err)))
}

fn slot_row(row: &Row) -> Result<SlotRecord, DbError> {
    Ok(SlotRecord {
        id: row.get(0),
        system: row.get(1),
        state: parse(row.get(2))?,
        instance_id: row.get(3),
        generation: row.get(4),
        leases: row.get::<_, i32>(5).max(0) as u32,
        failures: row.get::<_, i32>(6).max(0) as u32,
        reason: row.get(7),
        created_at: row.get(8),
        launched_at: row.get(9),
        state_changed_at: row.get(10),
        last_used_at: row.get(11),
        notice_at: row.get(12),
    })
}

pub(crate) async fn slot_insert(
    db: &Db<'_>,
    params: &SlotInsertParams,
) -> Result<SlotRecord, DbError> {
    let row = db
        .query_one(
            concat!(
                "INSERT INTO drover_slots (system, state, generation, reason, created_at, \
                     launched_at, state_changed_at, last_used_at) \
                 SELECT $1, 'launching', 1, $2, c.now, c.now, c.now, c.now FROM ",
                clock!("$3"),
                " RETURNING ",
                slot_columns!()
            ),
            &[&params.system, &params.reason, &params.now],
        )
        .await?;
    slot_row(&row)
}

pub(crate) async fn slot_transition(
    db: &Db<'_>,
    p: &SlotTransitionParams,
) -> Result<Option<SlotRecord>, DbError> {
    let hand_back = p.hand_back || matches!(p.to, SlotState::Empty | SlotState::Error);
    let row = db
        .query_opt(
            concat!(
                "UPDATE drover_slots SET state = $4, reason = $5, state_changed_at = c.now, \
                     generation = generation + CASE WHEN $4 = 'launching' THEN 1 ELSE 0 END, \
                     launched_at = CASE WHEN $4 = 'launching' THEN c.now ELSE launched_at END, \
                     instance_id = CASE WHEN $6::text IS NOT NULL THEN $6 \
                         WHEN $4 IN ('launching', 'empty', 'error') THEN NULL \
                         ELSE instance_id END, \
                     notice_at = CASE WHEN $7::timestamptz IS NOT NULL THEN $7 \
                         WHEN $4 = 'launching' THEN NULL ELSE notice_at END, \
                     failures = CASE WHEN $4 = 'ready' THEN 0 \
                         WHEN $4 = 'error' THEN failures + 1 ELSE failures END, \
                     last_used_at = CASE WHEN $4 = 'ready' THEN c.now ELSE last_used_at END, \
                     leases = CASE WHEN $8 THEN 0 ELSE leases END FROM ",
                clock!("$9"),
                " WHERE id = $1 AND state = $2 AND generation = $3 RETURNING ",
                slot_columns!()
            ),
            &[
                &p.id,
                &p.from.as_str(),
                &p.generation,
                &p.to.as_str(),
                &p.reason,
                &p.instance_id,
                &p.notice_at,
                &hand_back,
                &p.now,
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    if hand_back {
        db.execute(
            "UPDATE drover_reservations SET phase = 'pending', slot_id = NULL \
             WHERE phase = 'assigned' AND slot_id = $1",
            &[&p.id],
        )
        .await?;
    }
    slot_row(&row).map(Some)
}

pub(crate) async fn slot_list(db: &Db<'_>, p: &SlotListParams) -> Result<Vec<SlotRecord>, DbError> {
    let states: Vec<&str> = p.states.iter().map(|s| s.as_str()).collect();
    let rows = db
        .query(
            concat!(
                "SELECT ",
                slot_columns!(),
                " FROM drover_slots WHERE ($1::bigint IS NULL OR id = $1) \
                   AND ($2::text IS NULL OR system = $2) \
                   AND (cardinality($3::text[]) = 0 OR state = ANY($3)) ORDER BY id"
            ),
            &[&p.id, &p.system, &states],
        )
        .await?;
    rows.iter().map(slot_row).collect()
}

macro_rules! reservation_columns {
    () => {
        "r.id, r.system, r.phase, r.holder, r.slot_id, s.instance_id, r.created_at, \
         r.expires_at, r.assigned_at, r.finished_at"
    };
}

fn reservation_row(row: &Row) -> Result<ReservationRecord, DbError> {
    let phase: ReservationPhase = parse(row.get(2))?;
    Ok(ReservationRecord {
        id: row.get(0),
        system: row.get(1),
        phase,
        holder: row.get(3),
        slot_id: row.get(4),
        instance_id: if phase == ReservationPhase::Assigned {
            row.get(5)
        } else {
            None
        },
        created_at: row.get(6),
        expires_at: row.get(7),
        assigned_at: row.get(8),
        finished_at: row.get(9),
    })
}

pub(crate) async fn reservation_get(
    db: &Db<'_>,
    id: i64,
) -> Result<Option<ReservationRecord>, DbError> {
    let row = db
        .query_opt(
            concat!(
                "SELECT ",
                reservation_columns!(),
                " FROM drover_reservations r LEFT JOIN drover_slots s ON s.id = r.slot_id \
                 WHERE r.id = $1"
            ),
            &[&id],
        )
        .await?;
    row.as_ref().map(reservation_row).transpose()
}

pub(crate) async fn reservation_insert(
    db: &Db<'_>,
    system: &str,
    holder: &str,
    ttl: std::time::Duration,
    now: Option<Timestamp>,
) -> Result<ReservationRecord, DbError> {
    let id: i64 = db
        .query_one(
            concat!(
                "INSERT INTO drover_reservations (system, phase, holder, created_at, expires_at) \
                 SELECT $1, 'pending', $2, c.now, \
                     c.now + $3::bigint * interval '1 microsecond' FROM ",
                clock!("$4"),
                " RETURNING id"
            ),
            &[&system, &holder, &micros(ttl), &now],
        )
        .await?
        .get(0);
    Ok(reservation_get(db, id).await?.expect("just inserted"))
}

/// Assignments per statement.
const ASSIGN_CHUNK: usize = 1_000;

/// One statement per chunk: the k-th valid assignment (in input order) to a slot is made when
/// the slot's leases plus k stay within its limit, which is what assigning one at a time would
/// do. The slot and reservation rows are locked first (`FOR UPDATE`), so concurrent assigners
/// see each other's leases and the limit holds. A reservation listed twice is assigned at most
/// by its first appearance.
const ASSIGN: &str = "\
WITH c AS (SELECT coalesce($4::timestamptz, now()) AS now), \
a AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[]) WITH ORDINALITY \
      AS a(reservation, slot, max_leases, ord)), \
f AS (SELECT DISTINCT ON (reservation) reservation, slot, max_leases, ord FROM a \
      ORDER BY reservation, ord), \
r AS (SELECT id, system FROM drover_reservations \
      WHERE id IN (SELECT reservation FROM f) AND phase = 'pending' \
        AND expires_at > (SELECT now FROM c) FOR UPDATE), \
s AS (SELECT id, leases, system FROM drover_slots \
      WHERE id IN (SELECT slot FROM f) AND state = 'ready' FOR UPDATE), \
v AS (SELECT f.reservation, f.slot, f.max_leases, s.leases, \
          row_number() OVER (PARTITION BY f.slot ORDER BY f.ord) AS k \
      FROM f JOIN r ON r.id = f.reservation JOIN s ON s.id = f.slot AND s.system = r.system), \
chosen AS (SELECT reservation, slot FROM v WHERE leases + k <= max_leases), \
slots_up AS (UPDATE drover_slots d SET leases = d.leases + n.n, last_used_at = (SELECT now FROM c) \
      FROM (SELECT slot, count(*)::int AS n FROM chosen GROUP BY slot) n WHERE d.id = n.slot) \
UPDATE drover_reservations d SET phase = 'assigned', slot_id = chosen.slot, \
    assigned_at = (SELECT now FROM c) \
FROM chosen WHERE d.id = chosen.reservation RETURNING d.id";

pub(crate) async fn reservation_assign(
    db: &Db<'_>,
    assignments: &[ReservationAssignment],
    now: Option<Timestamp>,
) -> Result<Vec<bool>, DbError> {
    let mut results = Vec::with_capacity(assignments.len());
    for chunk in assignments.chunks(ASSIGN_CHUNK) {
        let reservations: Vec<i64> = chunk.iter().map(|a| a.reservation).collect();
        let slots: Vec<i64> = chunk.iter().map(|a| a.slot).collect();
        let limits: Vec<i32> = chunk
            .iter()
            .map(|a| i32::try_from(a.max_leases).unwrap_or(i32::MAX))
            .collect();
        let assigned: std::collections::HashSet<i64> = db
            .query(ASSIGN, &[&reservations, &slots, &limits, &now])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut first = std::collections::HashSet::new();
        for a in chunk {
            results.push(first.insert(a.reservation) && assigned.contains(&a.reservation));
        }
    }
    Ok(results)
}

async fn give_back_leases(
    db: &Db<'_>,
    slots: &[i64],
    now: Option<Timestamp>,
) -> Result<(), DbError> {
    if slots.is_empty() {
        return Ok(());
    }
    // One row per lease: a slot appearing twice gives back two.
    db.execute(
        concat!(
            "UPDATE drover_slots SET leases = greatest(leases - g.n, 0), last_used_at = c.now \
             FROM (SELECT id, count(*)::int AS n FROM unnest($1::bigint[]) AS id GROUP BY id) g, ",
            clock!("$2"),
            " WHERE drover_slots.id = g.id"
        ),
        &[&slots, &now],
    )
    .await?;
    Ok(())
}

pub(crate) async fn reservation_release(
    db: &Db<'_>,
    id: i64,
    now: Option<Timestamp>,
) -> Result<Option<ReservationRecord>, DbError> {
    let released = db
        .query_opt(
            concat!(
                "UPDATE drover_reservations SET phase = 'released', finished_at = c.now FROM ",
                clock!("$2"),
                " WHERE id = $1 AND phase IN ('pending', 'assigned') RETURNING slot_id"
            ),
            &[&id, &now],
        )
        .await?;
    if let Some(slot) = released.and_then(|row| row.get::<_, Option<i64>>(0)) {
        give_back_leases(db, &[slot], now).await?;
    }
    reservation_get(db, id).await
}

pub(crate) async fn reservation_expire(
    db: &Db<'_>,
    now: Option<Timestamp>,
) -> Result<u64, DbError> {
    let rows = db
        .query(
            concat!(
                "UPDATE drover_reservations SET phase = 'expired', finished_at = c.now FROM ",
                clock!("$1"),
                " WHERE phase IN ('pending', 'assigned') AND expires_at <= c.now \
                 RETURNING slot_id"
            ),
            &[&now],
        )
        .await?;
    let held: Vec<i64> = rows
        .iter()
        .filter_map(|row| row.get::<_, Option<i64>>(0))
        .collect();
    give_back_leases(db, &held, now).await?;
    Ok(rows.len() as u64)
}

pub(crate) async fn reservation_list(
    db: &Db<'_>,
    p: &ReservationListParams,
) -> Result<Vec<ReservationRecord>, DbError> {
    let phases: Vec<&str> = p.phases.iter().map(|s| s.as_str()).collect();
    let limit: Option<i64> = (p.limit > 0).then_some(p.limit as i64);
    let rows = db
        .query(
            concat!(
                "SELECT ",
                reservation_columns!(),
                " FROM drover_reservations r LEFT JOIN drover_slots s ON s.id = r.slot_id \
                 WHERE ($1::bigint IS NULL OR r.id = $1) AND ($2::text IS NULL OR r.system = $2) \
                   AND (cardinality($3::text[]) = 0 OR r.phase = ANY($3)) \
                 ORDER BY r.id LIMIT $4"
            ),
            &[&p.id, &p.system, &phases, &limit],
        )
        .await?;
    rows.iter().map(reservation_row).collect()
}

pub(crate) async fn reservation_count(db: &Db<'_>) -> Result<Vec<ReservationCount>, DbError> {
    let rows = db
        .query(
            "SELECT system, phase, count(*) FROM drover_reservations \
             WHERE phase IN ('pending', 'assigned') GROUP BY system, phase \
             ORDER BY system COLLATE \"C\", phase COLLATE \"C\"",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(ReservationCount {
                system: row.get(0),
                phase: parse(row.get(1))?,
                count: row.get::<_, i64>(2) as u64,
            })
        })
        .collect()
}
