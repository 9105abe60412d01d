//! MetaInf, the veil coordinator: node registry, non-colluding committee selection, partitioning and the job
//! lifecycle. Nothing is implemented yet; see the MetaInf issue and DESIGN.md.
