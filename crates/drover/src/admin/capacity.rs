//! Capacity: the autoscaler's slots and reservations (see [`crate::autoscaler::admin`]).

use std::time::Duration;

use drover_core::{ReservationId, ReservationRecord, SlotId, SlotRecord};

use super::Admin;
use crate::autoscaler::admin as capacity;
use crate::error::Error;

impl Admin {
    /// Slots, by id; only those of `system` when given; empty slots left out unless `all`.
    pub async fn slots(&self, system: Option<String>, all: bool) -> Result<Vec<SlotRecord>, Error> {
        Ok(capacity::slots(self.store(), system, all).await?)
    }

    /// Drains a slot: no new lease; it finishes what it holds, then is terminated.
    pub async fn drain_slot(&self, id: SlotId) -> Result<SlotRecord, Error> {
        Ok(capacity::drain(self.store(), self.clock.as_ref(), id).await?)
    }

    /// Interrupts a slot as a provider's notice would: its leases are handed back at once.
    pub async fn interrupt_slot(&self, id: SlotId) -> Result<SlotRecord, Error> {
        Ok(capacity::interrupt(self.store(), self.clock.as_ref(), id).await?)
    }

    /// Reserves one lease of `system` for `ttl` (default: the system's `reservation_ttl`, or
    /// the default one when the autoscaler runs elsewhere), on behalf of `holder`.
    pub async fn reserve(
        &self,
        system: &str,
        ttl: Option<Duration>,
        holder: &str,
    ) -> Result<ReservationRecord, Error> {
        let declared: Option<Vec<String>> = self
            .systems
            .as_ref()
            .map(|systems| systems.keys().cloned().collect());
        let ttl = ttl.unwrap_or_else(|| {
            self.systems
                .as_ref()
                .and_then(|systems| systems.get(system))
                .map_or(
                    crate::autoscaler::SystemConfig::default().reservation_ttl,
                    |config| config.reservation_ttl,
                )
        });
        let request = capacity::Reservation {
            system,
            ttl,
            holder,
            declared: declared.as_deref(),
        };
        Ok(capacity::reserve(self.store(), self.clock.as_ref(), request).await?)
    }

    /// The open reservations (pending and assigned), oldest first, at most
    /// [`capacity::RESERVATION_LIST_LIMIT`]; only those of `system` when given.
    pub async fn reservations(
        &self,
        system: Option<String>,
    ) -> Result<Vec<ReservationRecord>, Error> {
        Ok(capacity::reservations(self.store(), system).await?)
    }

    /// How many reservations are open, per system and phase (exact, unlike a list).
    pub async fn reservation_counts(&self) -> Result<Vec<drover_core::ReservationCount>, Error> {
        Ok(capacity::reservation_counts(self.store()).await?)
    }

    /// One reservation: pending, or assigned with its slot and instance.
    pub async fn reservation(&self, id: ReservationId) -> Result<ReservationRecord, Error> {
        Ok(capacity::reservation(self.store(), id).await?)
    }

    /// Releases a reservation: its lease goes back to its slot.
    pub async fn release(&self, id: ReservationId) -> Result<ReservationRecord, Error> {
        Ok(capacity::release(self.store(), self.clock.as_ref(), id).await?)
    }
}
