//! Hardware-in-the-loop rig: QEMU board backend and suites
