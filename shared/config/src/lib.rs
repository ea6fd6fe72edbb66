//! Configuration document.
