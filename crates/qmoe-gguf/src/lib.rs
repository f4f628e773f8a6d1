//! qmoe-gguf: not yet built (see its issue).
