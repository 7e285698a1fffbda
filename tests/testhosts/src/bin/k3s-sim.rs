//! The `k3s-sim` binary: see [`siteflow_testhosts::sim`].

fn main() {
    siteflow_testhosts::sim::main()
}
