//! The integration tests, as one binary: the real daemon in a temporary folder, driven as its
//! users drive it (files dropped, the CLI, the HTTP API, a browser), with small model programs
//! as fixtures. One binary links the harness once; `cargo test --test it NAME` runs a part.

mod common;

mod api;
mod architecture;
mod backup;
mod bad_input;
mod burst;
mod cli;
mod completion;
mod corpus;
mod crash;
mod crash_steps;
mod faults;
mod field_defects;
mod impact;
mod products;
mod reload;
mod replay;
mod retention;
mod routing_in_the_daemon;
mod rules_from_the_command_line;
mod runs;
mod sample_chain;
mod service;
mod sftp;
mod slurm;
mod web_ui;
