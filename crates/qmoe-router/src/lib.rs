//! qmoe-router: not yet built (see its issue).
