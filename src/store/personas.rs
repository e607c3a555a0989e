//! The `personas` and `session_personas` tables: DynamicIdentityAgent's
//! personas created by task, and which persona each session uses. The llm
//! runtime reads a session's persona here (with the YAML personas of the
//! settings) to put it first in every prompt of that session.

/// Migration 10.
pub(crate) const MIGRATION: &str = "CREATE TABLE personas (
    name TEXT PRIMARY KEY,
    system_prompt TEXT NOT NULL,
    voice TEXT,
    tone TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE session_personas (
    session TEXT PRIMARY KEY,
    persona TEXT NOT NULL,
    updated_at REAL NOT NULL
);";

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::StoreError;
use crate::config::IdentitySettings;

/// A persona: the system prompt put before an llm agent's own, a voice and a tone.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Persona {
    /// The persona's name.
    pub name: String,
    /// Put before every llm agent's own system prompt.
    pub system_prompt: String,
    /// TTS voice (e.g. `en-us`), if set.
    pub voice: Option<String>,
    /// Tone (e.g. `friendly`), if set.
    pub tone: Option<String>,
    /// Where it is defined: `yaml` (the settings, read-only) or `task` (`identity.set`).
    pub source: PersonaSource,
}

/// Where a persona is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PersonaSource {
    /// The settings' `identity.personas` (read-only).
    Yaml,
    /// Created by an `identity.set` task.
    Task,
}

impl Persona {
    /// The system text this persona puts first in a prompt: its system
    /// prompt, then its tone when set.
    pub fn prompt(&self) -> String {
        match &self.tone {
            Some(tone) => format!("{}\nTone: {tone}.", self.system_prompt),
            None => self.system_prompt.clone(),
        }
    }
}

/// The persona named `name`: from the YAML personas first, else the table.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn get(conn: &Connection, yaml: &IdentitySettings, name: &str) -> Result<Option<Persona>, StoreError> {
    if let Some(p) = yaml.personas.get(name) {
        return Ok(Some(Persona {
            name: name.to_string(),
            system_prompt: p.system_prompt.clone(),
            voice: p.voice.clone(),
            tone: p.tone.clone(),
            source: PersonaSource::Yaml,
        }));
    }
    Ok(conn
        .query_row("SELECT name, system_prompt, voice, tone FROM personas WHERE name = ?1", params![name], |r| {
            Ok(Persona {
                name: r.get(0)?,
                system_prompt: r.get(1)?,
                voice: r.get(2)?,
                tone: r.get(3)?,
                source: PersonaSource::Task,
            })
        })
        .optional()?)
}

/// Every persona: the YAML ones, then those created by task, by name.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn list(conn: &Connection, yaml: &IdentitySettings) -> Result<Vec<Persona>, StoreError> {
    let mut out: Vec<Persona> = Vec::new();
    for name in yaml.personas.keys() {
        out.extend(get(conn, yaml, name)?);
    }
    let mut stmt = conn.prepare("SELECT name, system_prompt, voice, tone FROM personas ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(Persona {
            name: r.get(0)?,
            system_prompt: r.get(1)?,
            voice: r.get(2)?,
            tone: r.get(3)?,
            source: PersonaSource::Task,
        })
    })?;
    for p in rows {
        let p = p?;
        if !yaml.personas.contains_key(&p.name) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Creates or replaces a persona created by task.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn put(conn: &Connection, p: &Persona, now: f64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO personas (name, system_prompt, voice, tone, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(name) DO UPDATE SET system_prompt = ?2, voice = ?3, tone = ?4, updated_at = ?5",
        params![p.name, p.system_prompt, p.voice, p.tone, now],
    )?;
    Ok(())
}

/// Makes `persona` the persona of `session`.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn set_session(conn: &Connection, session: &str, persona: &str, now: f64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO session_personas (session, persona, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(session) DO UPDATE SET persona = ?2, updated_at = ?3",
        params![session, persona, now],
    )?;
    Ok(())
}

/// The persona `session` uses, if any (and if it still exists).
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn of_session(conn: &Connection, yaml: &IdentitySettings, session: &str) -> Result<Option<Persona>, StoreError> {
    let name: Option<String> = conn
        .query_row("SELECT persona FROM session_personas WHERE session = ?1", params![session], |r| r.get(0))
        .optional()?;
    match name {
        Some(n) => get(conn, yaml, &n),
        None => Ok(None),
    }
}
