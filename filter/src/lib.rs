//! fledge filter. (Being built.)
