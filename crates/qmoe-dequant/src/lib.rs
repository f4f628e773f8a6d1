//! qmoe-dequant: not yet built (see its issue).
