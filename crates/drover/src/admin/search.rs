//! Searching on columns no index covers (args, kind, creation and finish times) without
//! scanning the whole table: the list is read in windows of ids, newest first, and one page
//! reads at most [`SEARCH_BUDGET`] ids (or what [`Admin::with_search_budget`] sets). A page that is not full when the budget runs out says
//! where the search stopped (`searched_to`); its `next` continues from there. So a search for a
//! value that no job has costs the same bounded time at ten million jobs as at a thousand, and
//! an operator sees the search progress instead of a page that times out.

use drover_core::{JobId, JobListParams};

use super::Admin;
use super::jobs::{JobFilter, JobPage};
use crate::error::Error;

/// Ids one store call of a search covers.
const WINDOW: JobId = 25_000;

/// Most ids one page of a search reads.
pub const SEARCH_BUDGET: JobId = 200_000;

impl JobFilter {
    /// True when a part of the filter is not served by an index, so that a plain list could
    /// read the whole table to fill a page.
    pub(super) fn reads_unindexed_columns(&self) -> bool {
        self.args_contain.is_some()
            || self.kind.is_some()
            || self.created != Default::default()
            || self.finished != Default::default()
    }
}

impl Admin {
    /// A page of `filter`'s jobs below `after`, read in id windows (see the module docs).
    pub(super) async fn search(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobPage, Error> {
        let top = match after {
            Some(id) => id,
            None => match self.newest_id().await? {
                Some(id) => id + 1,
                None => return Ok(empty()),
            },
        };
        let mut jobs = Vec::new();
        // Ids below `below` are still to be searched.
        let mut below = top;
        while below > 1 {
            let above = (below - 1 - WINDOW.min(self.search_budget)).max(0);
            let mut params = filter.params(Some(below), limit + 1 - jobs.len());
            params.above_id = Some(above);
            jobs.extend(self.store().job_list(params).await?);
            if jobs.len() > limit {
                jobs.truncate(limit);
                let next = jobs.last().map(|job| job.id);
                return Ok(JobPage {
                    jobs,
                    next,
                    searched_to: None,
                });
            }
            below = above + 1;
            if top - below >= self.search_budget && below > 1 {
                return Ok(JobPage {
                    jobs,
                    next: Some(below),
                    searched_to: Some(below),
                });
            }
        }
        Ok(JobPage {
            jobs,
            next: None,
            searched_to: None,
        })
    }

    /// The highest job id, read through the primary key.
    async fn newest_id(&self) -> Result<Option<JobId>, Error> {
        let newest = self
            .store()
            .job_list(JobListParams {
                limit: 1,
                ..Default::default()
            })
            .await?;
        Ok(newest.first().map(|job| job.id))
    }
}

fn empty() -> JobPage {
    JobPage {
        jobs: Vec::new(),
        next: None,
        searched_to: None,
    }
}
