//! Built-in plugins embedded in the agent binary.
