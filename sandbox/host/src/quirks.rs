//! Ways this host can depart from Envoy's answers, to try a plugin against the proxies nobody on
//! this project wrote: every status the ABI allows for each host call, in turn; integer,
//! duration and timestamp properties as ASCII text (as nginx with ngx_wasm_module answers
//! `request.duration` `"0.254"` and `response.code` `"503"`) or with the wrong size;
//! `proxy_replace_header_map_value` leaving later copies of a header in place, as nginx does;
//! and no foreign functions.
//!
//! Pure: which status a call gets and how a value is written. The wasm adapter (`imports.rs`)
//! asks before it carries out each call.

use crate::abi::Status;

/// How a host departs from Envoy's answers. The default departs in nothing: Envoy's answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostQuirks {
    /// `Some(offset)`: each host call is answered, in turn, with every status the ABI 0.2.1 spec
    /// allows for it and Unimplemented (a host without the call), two Oks before each of them:
    /// Ok, Ok, s1, Ok, Ok, s2, … (two, so that a plugin that makes calls in pairs, such as a
    /// Hello then a Report on each new stream, still gets somewhere). A failed call does
    /// nothing. Call `n` (from 0, per VM) of the `i`-th import in [`Import::ALL`] gets entry
    /// `offset + i + n` of that sequence, so that different calls fail at different points and
    /// each offset starts the plugin differently.
    pub every_status: Option<usize>,
    /// How integer, duration and timestamp properties are written.
    pub properties: PropertyForm,
    /// `proxy_replace_header_map_value` replaces only the first copy of a header and keeps the
    /// later ones (nginx); Envoy replaces them all.
    pub replace_keeps_duplicates: bool,
    /// `proxy_call_foreign_function` knows no function (NotFound for `clear_route_cache` too),
    /// as a host without Envoy's foreign functions.
    pub without_foreign_functions: bool,
}

/// How an integer, duration or timestamp property is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PropertyForm {
    /// Envoy: 8 bytes little endian; durations and timestamps in nanoseconds.
    #[default]
    Envoy,
    /// ASCII decimal, as ngx_wasm_module: integers `"503"`; durations and timestamps in seconds
    /// with milliseconds, `"0.254"` and `"1718000000.123"`.
    Text,
    /// The value's low 4 bytes, little endian: the wrong size for the ABI's 64-bit integers.
    WrongSize,
    /// Envoy's form, text and the wrong size, one after the other.
    Mixed,
}

impl PropertyForm {
    /// The form of the `n`-th property answered in a VM.
    pub(crate) fn nth(self, n: u64) -> PropertyForm {
        match self {
            PropertyForm::Mixed => match n % 3 {
                0 => PropertyForm::Envoy,
                1 => PropertyForm::Text,
                _ => PropertyForm::WrongSize,
            },
            form => form,
        }
    }
}

/// The host calls this host implements, for [`HostQuirks::every_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Import {
    Log,
    GetLogLevel,
    GetCurrentTime,
    SetTickPeriod,
    SetEffectiveContext,
    GetBufferBytes,
    GetBufferStatus,
    GetHeaderMapPairs,
    SetHeaderMapPairs,
    GetHeaderMapSize,
    GetHeaderMapValue,
    ReplaceHeaderMapValue,
    AddHeaderMapValue,
    RemoveHeaderMapValue,
    GetProperty,
    DefineMetric,
    IncrementMetric,
    RecordMetric,
    GetMetric,
    CallForeignFunction,
    GrpcStream,
    GrpcSend,
    GrpcClose,
    GrpcCancel,
    GetStatus,
}

impl Import {
    pub(crate) const ALL: [Import; 25] = [
        Import::Log,
        Import::GetLogLevel,
        Import::GetCurrentTime,
        Import::SetTickPeriod,
        Import::SetEffectiveContext,
        Import::GetBufferBytes,
        Import::GetBufferStatus,
        Import::GetHeaderMapPairs,
        Import::SetHeaderMapPairs,
        Import::GetHeaderMapSize,
        Import::GetHeaderMapValue,
        Import::ReplaceHeaderMapValue,
        Import::AddHeaderMapValue,
        Import::RemoveHeaderMapValue,
        Import::GetProperty,
        Import::DefineMetric,
        Import::IncrementMetric,
        Import::RecordMetric,
        Import::GetMetric,
        Import::CallForeignFunction,
        Import::GrpcStream,
        Import::GrpcSend,
        Import::GrpcClose,
        Import::GrpcCancel,
        Import::GetStatus,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The statuses other than Ok that the ABI 0.2.1 spec lists for this call, then
    /// Unimplemented (hosts answer it for calls they lack, as ngx_wasm_module does for
    /// `proxy_grpc_stream`). `proxy_grpc_stream` also gets BadArgument, which Envoy returns.
    pub(crate) fn failures(self) -> &'static [Status] {
        use Status::*;
        match self {
            Import::Log => &[BadArgument, InvalidMemoryAccess, Unimplemented],
            Import::GetLogLevel | Import::GetCurrentTime | Import::GetStatus => {
                &[InvalidMemoryAccess, Unimplemented]
            }
            Import::SetTickPeriod => &[Unimplemented],
            Import::SetEffectiveContext => &[BadArgument, Unimplemented],
            Import::GetBufferBytes | Import::GetBufferStatus => {
                &[BadArgument, NotFound, InvalidMemoryAccess, Unimplemented]
            }
            Import::GetHeaderMapPairs
            | Import::SetHeaderMapPairs
            | Import::GetHeaderMapSize
            | Import::ReplaceHeaderMapValue
            | Import::AddHeaderMapValue
            | Import::RemoveHeaderMapValue
            | Import::DefineMetric => &[BadArgument, InvalidMemoryAccess, Unimplemented],
            Import::GetHeaderMapValue => {
                &[BadArgument, NotFound, InvalidMemoryAccess, Unimplemented]
            }
            Import::GetProperty => &[
                NotFound,
                SerializationFailure,
                InvalidMemoryAccess,
                Unimplemented,
            ],
            Import::IncrementMetric => &[NotFound, BadArgument, Unimplemented],
            Import::RecordMetric => &[NotFound, Unimplemented],
            Import::GetMetric => &[NotFound, InvalidMemoryAccess, Unimplemented],
            Import::CallForeignFunction => &[NotFound, InvalidMemoryAccess, Unimplemented],
            Import::GrpcStream => &[
                BadArgument,
                ParseFailure,
                InternalFailure,
                InvalidMemoryAccess,
                Unimplemented,
            ],
            Import::GrpcSend => &[BadArgument, NotFound, InvalidMemoryAccess, Unimplemented],
            Import::GrpcClose | Import::GrpcCancel => &[BadArgument, NotFound, Unimplemented],
        }
    }
}

/// One VM's place in each call's sequence of statuses.
#[derive(Debug, Clone)]
pub(crate) struct Faults {
    offset: usize,
    calls: [usize; Import::ALL.len()],
}

impl Faults {
    pub(crate) fn new(offset: usize) -> Faults {
        Faults {
            offset,
            calls: [0; Import::ALL.len()],
        }
    }

    /// The status this call of `import` gets instead of being carried out; `None`: carry it out.
    pub(crate) fn next(&mut self, import: Import) -> Option<Status> {
        let i = import.index();
        let n = self.calls.get_mut(i)?;
        let turn = self.offset.wrapping_add(i).wrapping_add(*n);
        *n = n.wrapping_add(1);
        let failures = import.failures();
        let entry = turn % (3 * failures.len());
        if entry % 3 != 2 {
            return None;
        }
        failures.get(entry / 3).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_gets_every_allowed_status_in_turn_with_oks_between() {
        let mut faults = Faults::new(10);
        // GrpcStream is the 21st import: from offset 10 its sequence starts at (10 + 20) % 15 = 0.
        let answers: Vec<Option<Status>> =
            (0..15).map(|_| faults.next(Import::GrpcStream)).collect();
        use Status::*;
        let ok = None;
        assert_eq!(
            answers,
            [
                ok,
                ok,
                Some(BadArgument),
                ok,
                ok,
                Some(ParseFailure),
                ok,
                ok,
                Some(InternalFailure),
                ok,
                ok,
                Some(InvalidMemoryAccess),
                ok,
                ok,
                Some(Unimplemented),
            ]
        );
        assert_eq!(faults.next(Import::GrpcStream), None);
        // Log (index 0) is counted apart, and the offset shifts every sequence.
        let mut faults = Faults::new(0);
        assert_eq!(faults.next(Import::Log), None);
        let mut shifted = Faults::new(2);
        assert_eq!(shifted.next(Import::Log), Some(BadArgument));
        // SetTickPeriod (index 3): entries 5 % 3 = 2, then 0.
        assert_eq!(shifted.next(Import::SetTickPeriod), Some(Unimplemented));
        assert_eq!(shifted.next(Import::SetTickPeriod), None);
    }

    #[test]
    fn every_import_has_failures_and_a_place() {
        for (i, import) in Import::ALL.iter().enumerate() {
            assert_eq!(import.index(), i, "{import:?}");
            assert!(!import.failures().is_empty(), "{import:?}");
            assert!(!import.failures().contains(&Status::Ok), "{import:?}");
        }
    }

    #[test]
    fn mixed_properties_take_each_form_in_turn() {
        let forms: Vec<PropertyForm> = (0..4).map(|n| PropertyForm::Mixed.nth(n)).collect();
        assert_eq!(
            forms,
            [
                PropertyForm::Envoy,
                PropertyForm::Text,
                PropertyForm::WrongSize,
                PropertyForm::Envoy
            ]
        );
        assert_eq!(PropertyForm::Text.nth(1), PropertyForm::Text);
    }
}
