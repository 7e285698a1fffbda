//! Built-in siteflow steps: shell, sleep, noop, wait_until.
