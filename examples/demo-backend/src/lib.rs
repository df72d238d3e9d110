//! demo backend
