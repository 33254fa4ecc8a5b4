//! Typed Talos API client with talosconfig handling and mTLS
