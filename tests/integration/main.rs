//! Integration tests: the real daemon binary, real actors, real child
//! processes, real HTTP. One binary; each test in its own temp dir. Run with
//! `cargo nextest run` (one process per test).

mod util;

mod all_types;
mod arbiter;
mod audio;
mod auth;
mod backend_openai;
mod bench;
mod bus;
mod cancel_process;
mod chaos;
mod check;
mod conversation;
mod crash;
mod daemon;
mod drain;
mod fake_openai;
mod gateway;
mod governor;
mod knowledge;
mod layers;
mod lazy;
mod learning;
mod legacy;
mod llm;
mod local_models;
mod mcp;
mod memory;
mod models;
mod models_pull;
mod nothing_lost;
mod pc2_jobs;
mod policy;
mod receipts_log;
mod registry;
mod session;
mod speech_exec;
mod strategies;
mod tts_stream;
mod who_asks;
