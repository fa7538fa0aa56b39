//! Drover's [`Store`](drover_core::Store) on PostgreSQL. (Being written.)
