//! The fledge sandbox. (Being built.)
