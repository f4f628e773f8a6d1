//! qmoe-matvec: not yet built (see its issue).
