//! `demo-backend --name coffee-1 --listen 127.0.0.11:8080 [--name tea-1 --listen ...]`: runs one
//! demo server per (name, address) pair until interrupted.
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Demo HTTP backends that answer with their name, address, URI and request id")]
struct Args {
    /// Server names, one per --listen, in the same order.
    #[arg(long = "name", required = true)]
    names: Vec<String>,
    /// Addresses to listen on.
    #[arg(long = "listen", required = true)]
    listen: Vec<std::net::SocketAddr>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.names.len() == args.listen.len(),
        "give one --name per --listen"
    );
    let mut servers = tokio::task::JoinSet::new();
    for (name, addr) in args.names.into_iter().zip(args.listen) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("demo backend {name}: cannot listen on {addr}: {e}"))?;
        println!("demo backend {name} listening on {addr}");
        servers.spawn(demo_backend::serve(listener, name));
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        Some(res) = servers.join_next() => Err(anyhow::anyhow!("a demo backend stopped: {res:?}")),
    }
}
