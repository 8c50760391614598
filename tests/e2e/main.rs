//! End-to-end tests: one binary, real Herald instances (in-process on port 0, or
//! the `herald` executable), a real SQLite store in a temp dir (PostgreSQL and
//! Redis stores on loopback for the multi-process tests), and local HTTP provider
//! servers on 127.0.0.1.

mod api;
mod audit;
mod auth;
mod batching;
mod circuit;
mod cli;
mod contract;
mod deadline;
mod delivery;
mod dysmsapi;
mod events;
mod failover;
mod first_hour_input;
mod first_hour_ops;
mod helpers;
mod inbound;
mod ingest;
mod logs;
mod page;
mod preflight;
mod process;
mod receipts;
mod smpp;
mod smtp;
mod spend;
mod store;
mod template_sms;
mod upload;
mod webhooks;
