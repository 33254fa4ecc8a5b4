//! Boards described as data and validated
