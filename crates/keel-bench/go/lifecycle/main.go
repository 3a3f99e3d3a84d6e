// Command lifecycle drives containerd with its Go client, as the baseline keel is measured
// against by `cargo xtask bench`.
//
// Every mode creates containers from a root folder with containerd.WithNewSpec and the runc v2
// runtime, without an image, and prints one JSON object per line on stdout:
//
//	lifecycle   -n N                      runs one lifecycle of /bin/true for each "go" line on
//	                                      stdin, at most N, printing {"ms": ..., "steps":
//	                                      [...]} per line; the bench interleaves it with the
//	                                      other clients
//	exec        -n N                      starts one container running sleep, then runs
//	                                      /bin/true in it with exec for each "go" line on
//	                                      stdin, printing {"ms": ...} per line
//	throughput  -n N -c C                 runs N lifecycles of /bin/true, C at a time
//	stdio       -bytes B                  runs `head -c B /dev/zero` and counts its stdout
//	events                                subscribes to /tasks/ events of the namespace until
//	                                      stdin closes, then prints the latency of each event
//	                                      since the last line on stdin from its envelope stamp
//
// It builds offline in GOPATH mode against Debian's golang-github-containerd-containerd-dev.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

const runtimeName = "io.containerd.runc.v2"

type options struct {
	socket    string
	namespace string
	rootfs    string
	prefix    string
	count     int
	workers   int
	bytes     int64
}

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: lifecycle lifecycle|throughput|stdio|events [flags]"))
	}
	mode := os.Args[1]
	var opts options
	flags := flag.NewFlagSet(mode, flag.ExitOnError)
	flags.StringVar(&opts.socket, "socket", "", "containerd's gRPC socket")
	flags.StringVar(&opts.namespace, "namespace", "", "containerd namespace to work in")
	flags.StringVar(&opts.rootfs, "rootfs", "", "root folder of every container")
	flags.StringVar(&opts.prefix, "prefix", "go", "prefix of container ids")
	flags.IntVar(&opts.count, "n", 1, "number of lifecycles")
	flags.IntVar(&opts.workers, "c", 1, "lifecycles run at a time")
	flags.Int64Var(&opts.bytes, "bytes", 0, "bytes of stdout to produce")
	if err := flags.Parse(os.Args[2:]); err != nil {
		fail(err)
	}
	if opts.socket == "" || opts.namespace == "" {
		fail(fmt.Errorf("-socket and -namespace are required"))
	}

	client, err := containerd.New(opts.socket, containerd.WithDefaultRuntime(runtimeName))
	if err != nil {
		fail(fmt.Errorf("connect to %s: %w", opts.socket, err))
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), opts.namespace)

	switch mode {
	case "lifecycle":
		err = runLifecycles(ctx, client, opts)
	case "exec":
		err = runExecs(ctx, client, opts)
	case "throughput":
		err = runThroughput(ctx, client, opts)
	case "stdio":
		err = runStdio(ctx, client, opts)
	case "events":
		err = runEvents(ctx, client, opts)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		fail(err)
	}
}

// steps holds the wall time of each step of one lifecycle, in milliseconds: create the
// container, create and start the task, wait for the exit, delete the task, delete the
// container.
type steps [5]float64

// lifecycle creates a container running args, starts its task, waits for the exit and deletes
// the task and the container, and returns the time of each step. stdout, when not nil,
// receives the process's stdout.
func lifecycle(ctx context.Context, client *containerd.Client, opts options, id string, stdout io.Writer, args ...string) (steps, error) {
	var times steps
	step := 0
	last := time.Now()
	lap := func() {
		now := time.Now()
		times[step] = ms(now.Sub(last))
		last = now
		step++
	}

	container, err := client.NewContainer(ctx, id,
		containerd.WithRuntime(runtimeName, nil),
		containerd.WithNewSpec(oci.WithRootFSPath(opts.rootfs), oci.WithProcessArgs(args...)),
	)
	if err != nil {
		return times, fmt.Errorf("create container %s: %w", id, err)
	}
	deleted := false
	defer func() {
		if !deleted {
			container.Delete(ctx)
		}
	}()
	lap()

	creator := cio.NullIO
	if stdout != nil {
		creator = cio.NewCreator(cio.WithStreams(nil, stdout, io.Discard))
	}
	task, err := container.NewTask(ctx, creator)
	if err != nil {
		return times, fmt.Errorf("create task %s: %w", id, err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		task.Delete(ctx)
		return times, fmt.Errorf("wait task %s: %w", id, err)
	}
	if err := task.Start(ctx); err != nil {
		task.Delete(ctx)
		return times, fmt.Errorf("start task %s: %w", id, err)
	}
	lap()
	status := <-exited
	lap()
	if _, err := task.Delete(ctx); err != nil {
		return times, fmt.Errorf("delete task %s: %w", id, err)
	}
	lap()
	deleted = true
	if err := container.Delete(ctx); err != nil {
		return times, fmt.Errorf("delete container %s: %w", id, err)
	}
	lap()
	if code, _, err := status.Result(); err != nil || code != 0 {
		return times, fmt.Errorf("task %s exited with %d: %v", id, code, err)
	}
	return times, nil
}

// runLifecycles runs one lifecycle per "go" line on stdin, so the caller can interleave it
// with other clients, and prints each one's wall time and the time of each of its steps.
func runLifecycles(ctx context.Context, client *containerd.Client, opts options) error {
	lines := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for i := 0; i < opts.count && lines.Scan(); i++ {
		id := fmt.Sprintf("%s-%d", opts.prefix, i)
		started := time.Now()
		times, err := lifecycle(ctx, client, opts, id, nil, "/bin/true")
		if err != nil {
			return err
		}
		elapsed := time.Since(started)
		line := struct {
			Ms    float64 `json:"ms"`
			Steps steps   `json:"steps"`
		}{ms(elapsed), times}
		if err := out.Encode(line); err != nil {
			return err
		}
	}
	return lines.Err()
}

// runExecs runs one exec of /bin/true per "go" line on stdin in a container running sleep,
// and prints each one's wall time: exec, start, wait for the exit, delete.
func runExecs(ctx context.Context, client *containerd.Client, opts options) error {
	id := fmt.Sprintf("%s-exec", opts.prefix)
	container, err := client.NewContainer(ctx, id,
		containerd.WithRuntime(runtimeName, nil),
		containerd.WithNewSpec(oci.WithRootFSPath(opts.rootfs), oci.WithProcessArgs("/bin/sleep", "3600")),
	)
	if err != nil {
		return fmt.Errorf("create container %s: %w", id, err)
	}
	defer container.Delete(ctx)
	task, err := container.NewTask(ctx, cio.NullIO)
	if err != nil {
		return fmt.Errorf("create task %s: %w", id, err)
	}
	defer task.Delete(ctx, containerd.WithProcessKill)
	if err := task.Start(ctx); err != nil {
		return fmt.Errorf("start task %s: %w", id, err)
	}
	spec, err := container.Spec(ctx)
	if err != nil {
		return fmt.Errorf("read spec of %s: %w", id, err)
	}

	lines := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for i := 0; i < opts.count && lines.Scan(); i++ {
		process := *spec.Process
		process.Args = []string{"/bin/true"}
		started := time.Now()
		if err := execOnce(ctx, task, fmt.Sprintf("true-%d", i), &process); err != nil {
			return err
		}
		if err := out.Encode(map[string]float64{"ms": ms(time.Since(started))}); err != nil {
			return err
		}
	}
	return lines.Err()
}

func execOnce(ctx context.Context, task containerd.Task, execID string, process *specs.Process) error {
	exec, err := task.Exec(ctx, execID, process, cio.NullIO)
	if err != nil {
		return fmt.Errorf("exec %s: %w", execID, err)
	}
	exited, err := exec.Wait(ctx)
	if err != nil {
		exec.Delete(ctx)
		return fmt.Errorf("wait exec %s: %w", execID, err)
	}
	if err := exec.Start(ctx); err != nil {
		exec.Delete(ctx)
		return fmt.Errorf("start exec %s: %w", execID, err)
	}
	status := <-exited
	if _, err := exec.Delete(ctx); err != nil {
		return fmt.Errorf("delete exec %s: %w", execID, err)
	}
	if code, _, err := status.Result(); err != nil || code != 0 {
		return fmt.Errorf("exec %s exited with %d: %v", execID, code, err)
	}
	return nil
}

func runThroughput(ctx context.Context, client *containerd.Client, opts options) error {
	var next, failures int64
	var wg sync.WaitGroup
	var firstError atomic.Value
	started := time.Now()
	for w := 0; w < opts.workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := atomic.AddInt64(&next, 1) - 1
				if i >= int64(opts.count) {
					return
				}
				id := fmt.Sprintf("%s-%d", opts.prefix, i)
				if _, err := lifecycle(ctx, client, opts, id, nil, "/bin/true"); err != nil {
					atomic.AddInt64(&failures, 1)
					firstError.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(started)
	result := map[string]interface{}{
		"seconds":  elapsed.Seconds(),
		"count":    opts.count,
		"failures": failures,
	}
	if message, ok := firstError.Load().(string); ok {
		result["first_error"] = message
	}
	return json.NewEncoder(os.Stdout).Encode(result)
}

type countingWriter struct{ bytes int64 }

func (w *countingWriter) Write(data []byte) (int, error) {
	w.bytes += int64(len(data))
	return len(data), nil
}

func runStdio(ctx context.Context, client *containerd.Client, opts options) error {
	stdout := &countingWriter{}
	id := fmt.Sprintf("%s-stdio", opts.prefix)
	started := time.Now()
	_, err := lifecycle(ctx, client, opts, id, stdout, "/bin/head", "-c", fmt.Sprint(opts.bytes), "/dev/zero")
	if err != nil {
		return err
	}
	elapsed := time.Since(started)
	return json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"seconds": elapsed.Seconds(),
		"bytes":   stdout.bytes,
	})
}

// runEvents subscribes like keel does and prints the latency of every event from containerd's
// envelope stamp to its arrival here. It writes "live" to stderr when the first event arrives,
// drops what it measured at each line on stdin and writes "reset", and prints its
// measurements when stdin closes.
func runEvents(ctx context.Context, client *containerd.Client, opts options) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resets := make(chan struct{})
	go func() {
		lines := bufio.NewScanner(os.Stdin)
		for lines.Scan() {
			resets <- struct{}{}
		}
		cancel()
	}()
	filter := fmt.Sprintf("namespace==%s,topic~=|^/tasks/|", opts.namespace)
	envelopes, errs := client.EventService().Subscribe(ctx, filter)
	fmt.Fprintln(os.Stderr, "subscribed")
	latencies := []float64{}
	live := false
	for {
		select {
		case envelope := <-envelopes:
			latencies = append(latencies, ms(time.Since(envelope.Timestamp)))
			if !live {
				live = true
				fmt.Fprintln(os.Stderr, "live")
			}
		case <-resets:
			latencies = []float64{}
			fmt.Fprintln(os.Stderr, "reset")
		case err := <-errs:
			if err != nil && ctx.Err() == nil {
				return err
			}
			sort.Float64s(latencies)
			return json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
				"latencies_ms": latencies,
			})
		}
	}
}

func ms(duration time.Duration) float64 {
	return float64(duration.Nanoseconds()) / 1e6
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}
