// Command pgserver starts a private PostgreSQL server for trying dtx's
// PostgreSQL participant (the machine's server binaries, run as the
// postgres user when started as root; 127.0.0.1 only; fsync on; prepared
// transactions enabled), prints its DSN and serves until interrupted:
//
//	go run ./internal/pgtest/cmd/pgserver --dir /tmp/dtx-pg --port 5433
//
// With --dir the data stays there and a later run on it starts the same
// database (crash recovery included); without it a temporary directory is
// used and removed.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/dtx-dev/dtx/internal/pgtest"
)

func main() {
	dir := flag.String("dir", "", "base directory of the server (kept); empty: a temporary one (removed)")
	port := flag.Int("port", 5433, "TCP port on 127.0.0.1 (0: a free one)")
	flag.Parse()
	if *port < 0 || *port > 65535 {
		fmt.Fprintf(os.Stderr, "pgserver: --port %d is out of range\n", *port)
		os.Exit(2)
	}
	s, err := pgtest.New(pgtest.Options{Dir: *dir, Port: *port})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgserver:", err)
		os.Exit(1)
	}
	fmt.Println(s.DSN("postgres"))
	fmt.Fprintf(os.Stderr, "pgserver: PostgreSQL in %s, listening on 127.0.0.1:%d; Ctrl-C stops it\n", s.Base, s.Port)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	if *dir != "" {
		err = s.Stop()
	} else {
		err = s.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgserver:", err)
		os.Exit(1)
	}
}
