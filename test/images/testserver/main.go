// Command testserver is the HTTP server of Navarch's test image
// (navarch.io/testserver): endpoints that tests of the node agent probe,
// and modes that misbehave on purpose (allocate memory, exit with a code).
// It is built static (CGO_ENABLED=0) so the image needs nothing else.
//
//	GET  /hostname   the hostname (the pod's name in a pod)
//	GET  /healthz    200 "ok", or 500 after POST /fail until POST /recover
//	GET  /env        the environment, one VAR=value a line, sorted
//	*    /echo       the request body back
//
// It listens on $PORT or 8080 (or -addr). -alloc-mib N (or $ALLOC_MIB) allocates and
// holds N MiB; -exit-code C with -exit-after D (or $EXIT_CODE, $EXIT_AFTER)
// exits with C after D. SIGTERM exits 0 at once.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	allocMiB := flag.Int("alloc-mib", envInt("ALLOC_MIB", 0), "allocate and hold this many MiB of memory")
	exitCode := flag.Int("exit-code", envInt("EXIT_CODE", -1), "exit with this code after -exit-after (-1: do not exit)")
	exitAfter := flag.Duration("exit-after", envDuration("EXIT_AFTER", 0), "delay before exiting with -exit-code")
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	addr := flag.String("addr", ":"+port, "listen address (default :$PORT, or :8080)")
	flag.Parse()
	log.SetFlags(0)

	if *allocMiB > 0 {
		held := allocate(*allocMiB)
		log.Printf("allocated %d MiB", len(held)>>20)
		defer func() { _ = held[0] }() // keep it reachable until exit
	}
	if *exitCode >= 0 {
		go func() {
			time.Sleep(*exitAfter)
			log.Printf("exiting with code %d", *exitCode)
			os.Exit(*exitCode)
		}()
	}

	srv := &http.Server{Addr: *addr, Handler: newHandler()}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		log.Printf("terminating")
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("testserver: %v", err)
	}
	log.Printf("listening on %s", ln.Addr())
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		log.Fatalf("testserver: %v", err)
	}
}

// allocate returns n MiB with every page written, so the memory is resident
// (and counts against a cgroup limit) rather than merely reserved.
func allocate(n int) []byte {
	b := make([]byte, n<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return b
}

// newHandler returns the server's endpoints. Health is per handler, so
// tests get a fresh one each.
func newHandler() http.Handler {
	var failing atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/hostname", func(w http.ResponseWriter, r *http.Request) {
		h, err := os.Hostname()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, h)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "failing", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) {
		failing.Store(true)
		log.Printf("healthz now fails")
		fmt.Fprintln(w, "healthz now fails")
	})
	mux.HandleFunc("POST /recover", func(w http.ResponseWriter, r *http.Request) {
		failing.Store(false)
		log.Printf("healthz recovered")
		fmt.Fprintln(w, "healthz recovered")
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		env := os.Environ()
		sort.Strings(env)
		fmt.Fprintln(w, strings.Join(env, "\n"))
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "navarch testserver: /hostname /healthz /env /echo, POST /fail /recover")
	})
	return mux
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return v
	}
	return def
}

func envDuration(key string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(key)); err == nil {
		return v
	}
	return def
}
