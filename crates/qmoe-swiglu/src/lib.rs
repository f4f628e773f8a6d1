//! qmoe-swiglu: not yet built (see its issue).
