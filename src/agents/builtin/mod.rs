//! Builtin behaviours: Rust code answering tasks in-process, one file per
//! behaviour. None is built yet: every builtin agent answers tasks with
//! `not_implemented` until its issue lands (the task-bus issue brings
//! UnifiedUtilsAgent and UnifiedSystemAgent first).
