//! Readers for the Sluice trigger extensions `schedules` and `watch` (a child module of
//! `parse`, so it uses the walker's generic readers).

use serde_json::Value;

use super::{Fields, Walker};
use crate::diag::Path;
use crate::triggers::{self, Polling, Schedule, Watch};

const SCHEDULE: Fields = Fields {
    known: "cron timeZone variables",
    ignored: &[],
};
const POLLING: Fields = Fields {
    known: "intervalSeconds",
    ignored: &[],
};
const WATCH: Fields = Fields {
    known: "path debounceSeconds sourceActionName",
    ignored: &[],
};

impl Walker<'_> {
    pub(super) fn schedule(&mut self, value: &Value, path: &Path) -> Option<Schedule> {
        let obj = self.object(value, path, &SCHEDULE)?;
        let cron = self.required(&obj, "cron", Self::string);
        let time_zone = self.optional(&obj, "timeZone", Self::string);
        let variables = self.optional(&obj, "variables", Self::string_map);
        Some(Schedule {
            cron: cron?,
            time_zone: time_zone?.unwrap_or_else(triggers::default_time_zone),
            variables: variables?.unwrap_or_default(),
        })
    }

    pub(super) fn polling(&mut self, value: &Value, path: &Path) -> Option<Polling> {
        let obj = self.object(value, path, &POLLING)?;
        let interval_seconds = self.optional(&obj, "intervalSeconds", Self::integer);
        Some(Polling {
            interval_seconds: interval_seconds?
                .unwrap_or_else(triggers::default_poll_interval_seconds),
        })
    }

    pub(super) fn watch(&mut self, value: &Value, path: &Path) -> Option<Watch> {
        let obj = self.object(value, path, &WATCH)?;
        let dir = self.required(&obj, "path", Self::string);
        let debounce_seconds = self.optional(&obj, "debounceSeconds", Self::integer);
        let source_action_name = self.optional(&obj, "sourceActionName", Self::string);
        Some(Watch {
            path: dir?,
            debounce_seconds: debounce_seconds?.unwrap_or_else(triggers::default_debounce_seconds),
            source_action_name: source_action_name?,
        })
    }
}
