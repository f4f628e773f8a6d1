//! qmoe-layer: not yet built (see its issue).
