//! Any bytes: the header parser never panics, whatever parses re-emits to
//! the same bytes, and the tracker accepts whatever the parser accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcblast_common::wire::{HEADER_LEN, Header, Packet};
use mcblast_common::FlowState;

fuzz_target!(|data: &[u8]| {
    let view = Packet::new_checked(data);
    match Header::parse_datagram(data) {
        Ok(h) => {
            assert!(view.is_ok());
            assert_eq!(h.len as usize, data.len());
            let mut buf = data.to_vec();
            h.emit(&mut Packet::new_unchecked(&mut buf[..]));
            assert_eq!(&buf[..HEADER_LEN], &data[..HEADER_LEN]);
            assert_eq!(Header::parse_datagram(&buf), Ok(h));
            let mut st = FlowState::new();
            st.on_header(&h, h.tx_ns.wrapping_add(1000));
            st.on_header(&h, h.tx_ns.wrapping_add(2000));
            assert!(st.received <= 2);
        }
        Err(_) => {
            if let Ok(p) = view {
                // Accessors never panic after check_len.
                let _ = (p.magic(), p.version(), p.kind_raw(), p.flags(), p.run(), p.flow(), p.seq(), p.tx_ns(), p.len_field(), p.clock());
            }
        }
    }
});
