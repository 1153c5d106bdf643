//! Disk space of the data directory's file system.

use std::path::Path;

pub struct Space {
    pub total: u64,
    pub available: u64,
}

/// Total and available bytes, or `None` if the file system cannot be queried.
pub fn space(dir: &Path) -> Option<Space> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some(Space {
        total: (st.f_blocks as u64).saturating_mul(frsize),
        available: (st.f_bavail as u64).saturating_mul(frsize),
    })
}
