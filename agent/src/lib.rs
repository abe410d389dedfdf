//! The fledge agent. (Being built.)
