//! The routing-socket parsers on byte fixtures built from the documented Darwin layouts, on
//! every OS.

mod darwin;
mod route_events;
mod route_message;
