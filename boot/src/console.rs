//! Makes the console PID 1's stdin, stdout and stderr.
//!
//! The kernel opens /dev/console for /init when the initramfs has that device node; when it
//! does not, PID 1 starts without standard streams and its logs would go nowhere. Once
//! devtmpfs is mounted, /dev/console exists and is attached here.

use std::fs::OpenOptions;
use std::os::fd::AsFd;

pub fn attach() {
    if nix::sys::stat::fstat(std::io::stderr().as_fd()).is_ok() {
        return;
    }
    let Ok(console) = OpenOptions::new().read(true).write(true).open("/dev/console") else {
        return;
    };
    let _ = nix::unistd::dup2_stdin(&console);
    let _ = nix::unistd::dup2_stdout(&console);
    let _ = nix::unistd::dup2_stderr(&console);
}
