//! User settings kept as JSON in the Lucent data folder: window/level presets per modality and
//! key bindings. Edited in the Settings window; the built-in defaults apply when there is no file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::i18n::Lang;
use super::{Action, KeyBindings};

/// A window/level preset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PresetDef {
    pub modality: String,
    pub name: String,
    pub center: f64,
    pub width: f64,
}

/// Everything the Settings window edits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    pub presets: Vec<PresetDef>,
    /// (action, key name as egui names it)
    pub keys: Vec<(Action, String)>,
}

impl Default for Settings {
    fn default() -> Self {
        let presets = [
            ("Lung", -600.0, 1500.0),
            ("Mediastinum", 40.0, 350.0),
            ("Bone", 300.0, 2000.0),
            ("Abdomen", 40.0, 400.0),
            ("Brain", 40.0, 80.0),
        ]
        .into_iter()
        .map(|(name, center, width)| PresetDef { modality: "CT".into(), name: name.into(), center, width })
        .collect();
        let keys = KeyBindings::default().0.into_iter().map(|(a, k)| (a, k.name().to_owned())).collect();
        Self { presets, keys }
    }
}

impl Settings {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("settings.json")
    }

    /// The saved settings, or the defaults when there are none; a broken file is reported.
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{} is not valid: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The key bindings, skipping names egui does not know.
    pub fn key_bindings(&self) -> KeyBindings {
        KeyBindings(self.keys.iter().filter_map(|(a, k)| egui::Key::from_name(k).map(|key| (*a, key))).collect())
    }
}

/// State of the Settings window.
#[derive(Debug, Default)]
pub struct SettingsWindow {
    pub open: bool,
    /// The action waiting for its new key.
    pub capturing: Option<Action>,
}

/// The Settings window; returns true when the settings changed.
pub fn settings_ui(ctx: &egui::Context, window: &mut SettingsWindow, settings: &mut Settings, lang: Lang) -> bool {
    let mut changed = false;
    let mut open = window.open;
    egui::Window::new(lang.tr("Settings")).open(&mut open).resizable(true).show(ctx, |ui| {
        ui.heading(lang.tr("Window presets"));
        egui::Grid::new("presets").striped(true).show(ui, |ui| {
            ui.label(lang.tr("Modality"));
            ui.label(lang.tr("Name"));
            ui.label("W");
            ui.label("L");
            ui.end_row();
            let mut remove = None;
            for (i, p) in settings.presets.iter_mut().enumerate() {
                changed |= ui.add(egui::TextEdit::singleline(&mut p.modality).desired_width(40.0)).changed();
                changed |= ui.add(egui::TextEdit::singleline(&mut p.name).desired_width(120.0)).changed();
                changed |= ui.add(egui::DragValue::new(&mut p.width).range(1.0..=100_000.0)).changed();
                changed |= ui.add(egui::DragValue::new(&mut p.center)).changed();
                if ui.button("✕").on_hover_text(lang.tr("Remove")).clicked() {
                    remove = Some(i);
                }
                ui.end_row();
            }
            if let Some(i) = remove {
                settings.presets.remove(i);
                changed = true;
            }
        });
        if ui.button(lang.tr("Add preset")).clicked() {
            settings.presets.push(PresetDef { modality: "CT".into(), name: "New".into(), center: 40.0, width: 400.0 });
            changed = true;
        }
        ui.separator();
        ui.heading(lang.tr("Keys"));
        if let Some(action) = window.capturing {
            let pressed = ctx.input(|i| {
                i.events.iter().find_map(|e| match e {
                    egui::Event::Key { key, pressed: true, .. } => Some(*key),
                    _ => None,
                })
            });
            if let Some(key) = pressed {
                if let Some(entry) = settings.keys.iter_mut().find(|(a, _)| *a == action) {
                    entry.1 = key.name().to_owned();
                }
                window.capturing = None;
                changed = true;
            }
        }
        egui::Grid::new("keys").striped(true).show(ui, |ui| {
            for (action, key) in &settings.keys {
                ui.label(format!("{action:?}"));
                let text =
                    if window.capturing == Some(*action) { lang.tr("press a key…").to_owned() } else { key.clone() };
                if ui.button(text).clicked() {
                    window.capturing = Some(*action);
                }
                ui.end_row();
            }
        });
        if ui.button(lang.tr("Restore defaults")).clicked() {
            *settings = Settings::default();
            changed = true;
        }
    });
    window.open = open;
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_rebind_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = Settings::path(dir.path());
        assert_eq!(Settings::load(&path).unwrap(), Settings::default());
        let mut s = Settings::default();
        s.presets.push(PresetDef { modality: "CR".into(), name: "Soft".into(), center: 2000.0, width: 3000.0 });
        s.keys.iter_mut().find(|(a, _)| *a == Action::Invert).unwrap().1 = "N".into();
        s.save(&path).unwrap();
        let loaded = Settings::load(&path).unwrap();
        assert_eq!(loaded, s);
        assert!(loaded.key_bindings().0.contains(&(Action::Invert, egui::Key::N)));
        std::fs::write(&path, "{").unwrap();
        assert!(Settings::load(&path).is_err());
    }
}
