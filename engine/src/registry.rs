//! The registry of step kinds the engine can run.

use siteflow_step::DynStep;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Step kinds by name; built explicitly by the CLI so the list can be grepped.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn DynStep>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds step kinds (a crate's `steps()` list).
    pub fn with(mut self, steps: Vec<Arc<dyn DynStep>>) -> Self {
        for s in steps {
            self.kinds.insert(s.kind(), s);
        }
        self
    }

    /// The kind named `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn DynStep>> {
        self.kinds.get(kind)
    }

    /// All kinds, sorted by name.
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn DynStep>> {
        self.kinds.values()
    }

    /// All kind names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }
}
