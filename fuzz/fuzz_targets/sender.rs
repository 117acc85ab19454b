#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netconsole_rs_fuzz::receiver::sender(data));
