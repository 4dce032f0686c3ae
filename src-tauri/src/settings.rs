//! User settings (not secrets): `settings.json` in the app data dir.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Notification preferences, as the UI shows them (`Settings` in the contract).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Only urgent (critical) notifications are shown.
    pub mute_non_urgent: bool,
    /// No notifications at all (the tray still shows what is pending).
    pub notifications_paused: bool,
}

/// Where settings live and the current value.
pub struct SettingsStore {
    path: Option<PathBuf>,
    current: std::sync::RwLock<Settings>,
}

impl SettingsStore {
    /// Reads `dir/settings.json` (defaults if missing or unreadable).
    pub fn open(dir: Option<&Path>) -> SettingsStore {
        let path = dir.map(|d| d.join("settings.json"));
        let current = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        SettingsStore {
            path,
            current: std::sync::RwLock::new(current),
        }
    }

    /// The current settings.
    pub fn get(&self) -> Settings {
        *self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves and returns the new settings. Errors are readable lines.
    pub fn set(&self, s: Settings) -> Result<Settings, String> {
        if let Some(p) = &self.path {
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)
                    .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
            }
            let tmp = p.with_extension("json.tmp");
            let text = serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?;
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, p))
                .map_err(|e| format!("cannot save settings to {}: {e}", p.display()))?;
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = s;
        Ok(s)
    }
}
