//! The MCP tools made from the task table: one tool per task type the run
//! serves, plus `fleet_status` and `agent_restart`; the names, the input
//! schemas, and the way a tool's arguments become a task envelope.
//!
//! Where it sits: [`super::McpServer`] builds a [`Tools`] from what
//! `coordinator.tasks` answers (the task table of the profile) and asks it,
//! for each `tools/call`, which task to send.
//!
//! **Names.** A tool is named after its task type with every character
//! other than an ASCII letter, digit, `_` or `-` written as `_`
//! (`utils.hash` → `utils_hash`, `simple_chat` stays); MCP clients accept
//! `[A-Za-z0-9_-]{1,64}`. The server keeps the reverse table (tool → type),
//! and refuses a second type whose name is taken ([`Tools::build`] reports
//! it); no two types of the catalog collide (a test checks it).
//!
//! **Arguments.** MCP tool arguments are a JSON object:
//! - a type whose input is an object (or an object or a short form, like
//!   `utils.hash`'s `"abc"` for `{"text": "abc"}`) takes the object's fields
//!   as the tool's arguments: the tool's input schema is the object form;
//! - any other type (text for llm agents, a number, anything) takes its
//!   whole input as the argument `input`.
//!
//! **Reserved arguments**, on every tool: `_model` (a backend name, a
//! backend's model, or a GGUF file in `models_dir`) → the envelope's
//! `model`; `_prefer` (`local` or `cloud`) → the envelope's `prefer`. No
//! task field starts with `_` (checked when the tools are built, and by a
//! test over the catalog).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The reserved argument naming a model for the task's model calls.
pub(crate) const MODEL_ARG: &str = "_model";
/// The reserved argument with the routing preference.
pub(crate) const PREFER_ARG: &str = "_prefer";
/// The argument holding a non-object input.
pub(crate) const INPUT_ARG: &str = "input";
/// The tool answering `system.agents` (the fleet and every agent's state).
pub(crate) const FLEET_STATUS: &str = "fleet_status";
/// The tool answering `system.restart` (an operator restart of one agent).
pub(crate) const AGENT_RESTART: &str = "agent_restart";

/// One entry of `coordinator.tasks` (as `GET /tasks` shows a type).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TypeEntry {
    /// The task type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// The agent that answers it.
    pub agent: String,
    /// One line saying what it does.
    pub summary: String,
    /// JSON Schema of the input, examples under `examples`.
    pub input_schema: Value,
    /// JSON Schema of the output.
    pub output_schema: Value,
}

/// What `coordinator.tasks` answers.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Served {
    /// The profile the daemon runs.
    pub profile: String,
    /// The types it serves.
    pub types: Vec<TypeEntry>,
}

/// How a tool's arguments become the task's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// The arguments (less the reserved ones) are the input object.
    Fields,
    /// The argument `input` is the input (absent: `null`).
    Wrapped,
}

/// One MCP tool.
#[derive(Debug, Clone)]
pub(crate) struct ToolDef {
    /// The tool name.
    pub name: String,
    /// The task type it sends.
    pub task_type: String,
    /// How the arguments become the input.
    pub form: Form,
    /// The description shown to the client.
    pub description: String,
    /// The tool's input schema (an object schema).
    pub input_schema: Map<String, Value>,
    /// The tool's output schema: `{"output", "route", "agent", "task_id"}`.
    pub output_schema: Map<String, Value>,
}

/// The task a tool call asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    /// The task type.
    pub task_type: String,
    /// The task input.
    pub input: Value,
    /// `_model`.
    pub model: Option<String>,
    /// `_prefer`.
    pub prefer: Option<String>,
}

/// An argument the tool refuses before anything is sent: the argument
/// and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BadArgument {
    /// The argument's name.
    pub field: String,
    /// What is wrong, naming the argument.
    pub message: String,
}

impl BadArgument {
    fn new(field: &str, why: impl std::fmt::Display) -> BadArgument {
        BadArgument { field: field.to_string(), message: format!("argument {field}: {why}") }
    }
}

/// The MCP tool name of a task type (see the module docs).
pub(crate) fn tool_name(task_type: &str) -> String {
    task_type.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

/// The object form of an input schema: the schema itself when it takes
/// objects, the single object branch of an `anyOf`/`oneOf` (its
/// description kept), else `None`.
fn object_form(schema: &Value) -> Option<Map<String, Value>> {
    let map = schema.as_object()?;
    let is_object = |s: &Map<String, Value>| match s.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => false,
    };
    if is_object(map) {
        let mut form = map.clone();
        form.insert("type".into(), json!("object"));
        return Some(form);
    }
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(branches)) = map.get(key) else { continue };
        let objects: Vec<&Map<String, Value>> =
            branches.iter().filter_map(Value::as_object).filter(|b| is_object(b)).collect();
        if let [only] = objects.as_slice() {
            let mut form = (*only).clone();
            form.insert("type".into(), json!("object"));
            if let (false, Some(d)) = (form.contains_key("description"), map.get("description")) {
                form.insert("description".into(), d.clone());
            }
            return Some(form);
        }
    }
    None
}

/// The reserved arguments' schemas.
fn reserved() -> [(&'static str, Value); 2] {
    [
        (
            MODEL_ARG,
            json!({"type": "string", "description": "Reserved: the model for this task's model calls (a backend name, \
                   a backend's model, or a GGUF file in models_dir); an unknown one is refused with the known list. \
                   Default: routing decides."}),
        ),
        (
            PREFER_ARG,
            json!({"type": "string", "enum": ["local", "cloud"], "description": "Reserved: prefer a local or a cloud \
                   model for this task's model calls (the router respects it unless impossible)."}),
        ),
    ]
}

/// The output schema of every tool: the reply's output, its route, the
/// agent and the task id.
fn output_schema(task_output: &Value) -> Map<String, Value> {
    let schema = json!({
        "type": "object",
        "properties": {
            "output": task_output,
            "route": {"type": ["object", "null"], "description": "the routing receipt of the task's model calls \
                       (backend, model, tier, reason, timings, tokens, cost); null when it made none"},
            "agent": {"type": "string", "description": "the agent that answered"},
            "task_id": {"type": "string", "description": "the task id on the bus"},
        },
        "required": ["output", "task_id"],
    });
    schema.as_object().cloned().unwrap_or_default()
}

impl ToolDef {
    /// The tool of one task type, named `name`; `Err` names a task field
    /// that takes a reserved argument's name.
    fn of(name: String, entry: &TypeEntry, description: String) -> Result<ToolDef, String> {
        let examples: Vec<Value> =
            entry.input_schema.get("examples").and_then(Value::as_array).cloned().unwrap_or_default();
        let (form, mut schema) = match object_form(&entry.input_schema) {
            Some(mut schema) => {
                let props = schema.get("properties").and_then(Value::as_object);
                if let Some(taken) = props.and_then(|p| p.keys().find(|k| k.starts_with('_'))) {
                    return Err(format!(
                        "{}: input field {taken} starts with _ (reserved for tool options)",
                        entry.task_type
                    ));
                }
                let objects: Vec<Value> = examples.into_iter().filter(Value::is_object).collect();
                schema.insert("examples".into(), Value::Array(objects));
                (Form::Fields, schema)
            }
            None => {
                let mut inner = entry.input_schema.as_object().cloned().unwrap_or_default();
                inner.remove("examples");
                let optional = examples.iter().any(Value::is_null);
                let wrapped: Vec<Value> =
                    examples.iter().map(|e| if e.is_null() { json!({}) } else { json!({INPUT_ARG: e}) }).collect();
                let mut schema = json!({
                    "type": "object",
                    "properties": {INPUT_ARG: inner},
                    "additionalProperties": false,
                    "examples": wrapped,
                });
                if !optional {
                    schema["required"] = json!([INPUT_ARG]);
                }
                (Form::Wrapped, schema.as_object().cloned().unwrap_or_default())
            }
        };
        let props = schema.entry("properties").or_insert_with(|| json!({}));
        if let Some(props) = props.as_object_mut() {
            for (arg, s) in reserved() {
                props.insert(arg.into(), s);
            }
        }
        Ok(ToolDef {
            name,
            task_type: entry.task_type.clone(),
            form,
            description,
            input_schema: schema,
            output_schema: output_schema(&entry.output_schema),
        })
    }

    /// The task a call with `arguments` asks for.
    ///
    /// # Errors
    /// [`BadArgument`]: `_model` not a non-empty string, `_prefer` not
    /// `local`/`cloud`, or (a tool taking `input`) an argument other than
    /// `input` and the reserved ones. The input itself is checked by the
    /// daemon against the type's schema.
    pub(crate) fn call(&self, arguments: Option<Map<String, Value>>) -> Result<Call, BadArgument> {
        let mut args = arguments.unwrap_or_default();
        let model = match args.remove(MODEL_ARG) {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) if !m.trim().is_empty() => Some(m),
            Some(other) => return Err(BadArgument::new(MODEL_ARG, format!("must be a model name, not {other}"))),
        };
        let prefer = match args.remove(PREFER_ARG) {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) if p == "local" || p == "cloud" => Some(p),
            Some(other) => {
                return Err(BadArgument::new(PREFER_ARG, format!("must be \"local\" or \"cloud\", not {other}")));
            }
        };
        let input = match self.form {
            Form::Fields => Value::Object(args),
            Form::Wrapped => {
                let input = args.remove(INPUT_ARG).unwrap_or(Value::Null);
                if let Some(extra) = args.keys().next() {
                    return Err(BadArgument::new(
                        extra,
                        format!("unknown; {} takes its input as `{INPUT_ARG}`", self.name),
                    ));
                }
                input
            }
        };
        Ok(Call { task_type: self.task_type.clone(), input, model, prefer })
    }
}

/// The tools of one run, by name.
#[derive(Debug, Default)]
pub(crate) struct Tools {
    /// The profile the daemon runs.
    pub profile: String,
    by_name: BTreeMap<String, ToolDef>,
}

impl Tools {
    /// The tools of the types `served`: one per type, then `fleet_status`
    /// (`system.agents`) and `agent_restart` (`system.restart`) when the
    /// run serves those. Returns the problems apart: a type whose name is
    /// taken, or whose input has a field named like a reserved argument, is
    /// left out.
    pub(crate) fn build(served: &Served) -> (Tools, Vec<String>) {
        let mut problems = Vec::new();
        let mut by_name: BTreeMap<String, ToolDef> = BTreeMap::new();
        let mut add = |name: String, entry: &TypeEntry, description: String| {
            if let Some(other) = by_name.get(&name) {
                problems
                    .push(format!("{}: tool name {name} is taken by {} (left out)", entry.task_type, other.task_type));
                return;
            }
            match ToolDef::of(name.clone(), entry, description) {
                Ok(tool) => {
                    by_name.insert(name, tool);
                }
                Err(p) => problems.push(p),
            }
        };
        let find = |t: &str| served.types.iter().find(|e| e.task_type == t);
        if let Some(e) = find("system.agents") {
            let d = format!(
                "The fleet: the profile and every agent with its state, restarts and uptime (task type system.agents, agent {}).",
                e.agent
            );
            add(FLEET_STATUS.into(), e, d);
        }
        if let Some(e) = find("system.restart") {
            let d = format!(
                "Restarts one agent (a fatal one comes back) and answers its state (task type system.restart, agent {}).",
                e.agent
            );
            add(AGENT_RESTART.into(), e, d);
        }
        for e in &served.types {
            let d = format!("{} (task type {}, agent {}).", e.summary.trim_end_matches('.'), e.task_type, e.agent);
            add(tool_name(&e.task_type), e, d);
        }
        (Tools { profile: served.profile.clone(), by_name }, problems)
    }

    /// The tool named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&ToolDef> {
        self.by_name.get(name)
    }

    /// Every tool, sorted by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &ToolDef> {
        self.by_name.values()
    }

    /// Number of tools.
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(t: &str, input_schema: Value) -> TypeEntry {
        TypeEntry {
            task_type: t.into(),
            agent: "A".into(),
            summary: "does it".into(),
            input_schema,
            output_schema: json!({"type": "string"}),
        }
    }

    fn served(types: Vec<TypeEntry>) -> Served {
        Served { profile: "p".into(), types }
    }

    #[test]
    fn names_use_the_characters_clients_accept() {
        assert_eq!(tool_name("utils.hash"), "utils_hash");
        assert_eq!(tool_name("simple_chat"), "simple_chat");
        assert_eq!(tool_name("a.b-c/d e"), "a_b-c_d_e");
    }

    #[test]
    fn an_object_or_short_input_takes_the_object_fields() {
        let schema = json!({"description": "top", "anyOf": [
            {"type": "string", "description": "short"},
            {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"], "additionalProperties": false},
        ], "examples": ["abc", {"text": "abc"}]});
        let (tools, problems) = Tools::build(&served(vec![entry("utils.hash", schema)]));
        assert!(problems.is_empty(), "{problems:?}");
        let tool = tools.get("utils_hash").unwrap();
        assert_eq!(tool.form, Form::Fields);
        assert_eq!(tool.input_schema["type"], "object");
        assert_eq!(tool.input_schema["description"], "top");
        assert_eq!(tool.input_schema["examples"], json!([{"text": "abc"}]));
        assert!(tool.input_schema["properties"].get(MODEL_ARG).is_some());
        let args = json!({"text": "abc", "_model": "m", "_prefer": "cloud"}).as_object().cloned();
        let call = tool.call(args).unwrap();
        assert_eq!(call.input, json!({"text": "abc"}));
        assert_eq!((call.model.as_deref(), call.prefer.as_deref()), (Some("m"), Some("cloud")));
    }

    #[test]
    fn any_other_input_is_the_input_argument() {
        let text = json!({"type": "string", "minLength": 1, "examples": ["hi"]});
        let none = json!({"description": "Not read", "examples": [null]});
        let (tools, _) = Tools::build(&served(vec![entry("simple_chat", text), entry("utils.time", none)]));
        let chat = tools.get("simple_chat").unwrap();
        assert_eq!(chat.form, Form::Wrapped);
        assert_eq!(chat.input_schema["required"], json!(["input"]));
        assert_eq!(chat.input_schema["examples"], json!([{"input": "hi"}]));
        assert_eq!(chat.call(json!({"input": "hello"}).as_object().cloned()).unwrap().input, json!("hello"));
        let bad = chat.call(json!({"input": "x", "text": "y"}).as_object().cloned()).unwrap_err();
        assert_eq!(bad.field, "text");
        let time = tools.get("utils_time").unwrap();
        assert!(time.input_schema.get("required").is_none());
        assert_eq!(time.call(None).unwrap().input, Value::Null);
    }

    #[test]
    fn reserved_arguments_are_checked_and_named() {
        let (tools, _) = Tools::build(&served(vec![entry("t", json!({"type": "string"}))]));
        let t = tools.get("t").unwrap();
        let e = t.call(json!({"_model": 3}).as_object().cloned()).unwrap_err();
        assert_eq!(e.field, "_model");
        assert!(e.message.contains("_model"), "{}", e.message);
        let e = t.call(json!({"_prefer": "gpu"}).as_object().cloned()).unwrap_err();
        assert_eq!(e.field, "_prefer");
    }

    #[test]
    fn collisions_and_reserved_fields_are_problems() {
        let obj = json!({"type": "object", "properties": {"_model": {"type": "string"}}});
        let (tools, problems) =
            Tools::build(&served(vec![entry("a.b", json!({})), entry("a_b", json!({})), entry("odd", obj)]));
        assert_eq!(tools.len(), 1, "{problems:?}");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("a_b") && p.contains("taken")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("odd") && p.contains("_model")), "{problems:?}");
    }

    /// The real catalog: every type gets its own tool, the tool leads back
    /// to the type, and no input field takes a reserved argument's name.
    #[test]
    fn every_type_of_the_catalog_has_its_own_tool() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/agents"));
        let catalog = crate::config::catalog::Catalog::load(dir).expect("the catalog loads");
        let table = crate::agents::task_table(&catalog).table;
        let served: Served = serde_json::from_value(json!({"profile": "all", "types": table.to_json()})).unwrap();
        let (tools, problems) = Tools::build(&served);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(tools.len(), table.len() + 2, "one per type, fleet_status, agent_restart");
        for def in table.iter() {
            let tool = tools.get(&tool_name(&def.task_type)).expect("a tool per type");
            assert_eq!(tool.task_type, def.task_type, "the name leads back to the type");
            assert_eq!(tool.input_schema["type"], "object", "{}", def.task_type);
        }
    }

    #[test]
    fn fleet_status_and_agent_restart_come_from_the_system_types() {
        let agent =
            json!({"anyOf": [{"type": "string"}, {"type": "object", "properties": {"agent": {"type": "string"}}}]});
        let (tools, problems) = Tools::build(&served(vec![
            entry("system.agents", json!({"examples": [null]})),
            entry("system.restart", agent),
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(tools.get(FLEET_STATUS).unwrap().task_type, "system.agents");
        let restart = tools.get(AGENT_RESTART).unwrap();
        let call = restart.call(json!({"agent": "X"}).as_object().cloned()).unwrap();
        assert_eq!((call.task_type.as_str(), call.input), ("system.restart", json!({"agent": "X"})));
    }
}
