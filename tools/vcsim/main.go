// Command vcsim-zdse serves govmomi's vCenter simulator on a loopback port,
// for zdse's tests and benchmarks.
//
// It builds one datacenter (DC0) with -hosts standalone ESX hosts and -vms
// virtual machines in total, spread round-robin over the hosts (VM i runs on
// host i mod hosts), all powered on. Once the SOAP endpoint accepts
// connections it prints one JSON line on stdout:
//
//	{"url":"https://user:pass@127.0.0.1:PORT/sdk","hosts":2,"vms":4,"startup_seconds":0.05}
//
// and serves until SIGINT or SIGTERM, then exits 0 after removing the
// datastore directories the simulator made under $TMPDIR.
//
// With -churn DURATION (off by default), the inventory changes while it
// serves: every DURATION one VM's power state is toggled, through the
// simulator's own power-off and power-on tasks, so that PropertyCollector
// answers (and so zdse's vsphere vms table) show it. The VMs are taken in the
// order they were made (DC0_H0_VM0, DC0_H1_VM0, ..., DC0_H0_VM1, ...), round
// and round: the first round powers each off, the next powers each on again.
//
// Unlike upstream vcsim, the credentials are always checked: a login with any
// other user name or password fails with InvalidLogin, as a real vCenter does.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// loopback is the only address served: the simulator is a test fixture and
// must never be reachable from another machine.
const loopback = "127.0.0.1"

// minChurn bounds -churn from below: each step is a task run in the
// simulator, and a step every few microseconds would only burn the CPU that
// the clients polling it need.
const minChurn = 10 * time.Millisecond

type options struct {
	hosts    int
	vms      int
	port     int
	username string
	password string
	useTLS   bool
	churn    time.Duration
}

// ready is the line printed once the simulator serves.
type ready struct {
	URL            string  `json:"url"`
	Hosts          int     `json:"hosts"`
	VMs            int     `json:"vms"`
	StartupSeconds float64 `json:"startup_seconds"`
	ChurnSeconds   float64 `json:"churn_seconds"`
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("vcsim-zdse", flag.ContinueOnError)
	fs.IntVar(&o.hosts, "hosts", 2, "number of standalone ESX hosts (at least 1)")
	fs.IntVar(&o.vms, "vms", 4, "number of virtual machines in total, spread round-robin over the hosts")
	fs.IntVar(&o.port, "port", 0, "TCP port on "+loopback+" (0: a free port chosen by the system)")
	fs.StringVar(&o.username, "username", "user", "the only user name accepted by Login")
	fs.StringVar(&o.password, "password", "pass", "the only password accepted by Login")
	fs.BoolVar(&o.useTLS, "tls", true, "serve https with a self-signed certificate (false: plain http)")
	fs.DurationVar(&o.churn, "churn", 0, "toggle one VM's power state every DURATION, e.g. 2s, cycling through the VMs (0: never)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() != 0:
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	case o.hosts < 1:
		return o, errors.New("-hosts must be at least 1")
	case o.vms < 0:
		return o, errors.New("-vms must not be negative")
	case o.port < 0 || o.port > 65535:
		return o, errors.New("-port must be in 0..65535")
	case o.username == "" || o.password == "":
		return o, errors.New("-username and -password must not be empty")
	case o.churn < 0 || (o.churn > 0 && o.churn < minChurn):
		return o, fmt.Errorf("-churn must be 0 (off) or at least %v, not %v", minChurn, o.churn)
	case o.churn > 0 && o.vms == 0:
		return o, errors.New("-churn needs at least one VM (-vms)")
	}
	return o, nil
}

// buildInventory creates the datacenter, the hosts and the datastore, then the
// VMs, through the simulator's own API (in process, no HTTP). It returns the
// VMs in the order they were made, bound to that in-process client, for churn.
func buildInventory(ctx context.Context, o options) (*simulator.Model, []*object.VirtualMachine, error) {
	model := simulator.VPX()
	model.Datacenter = 1
	model.Host = o.hosts
	model.Cluster = 0
	model.ClusterHost = 0
	model.Machine = 0 // VMs are made below, so that -vms is a total
	model.Datastore = 1
	model.Portgroup = 0
	if err := model.Create(); err != nil {
		return nil, nil, fmt.Errorf("creating the inventory: %w", err)
	}

	client, err := vim25.NewClient(ctx, model.Service)
	if err != nil {
		model.Remove()
		return nil, nil, err
	}
	vms, err := createVMs(ctx, client, o.vms)
	if err != nil {
		model.Remove()
		return nil, nil, fmt.Errorf("creating the virtual machines: %w", err)
	}
	return model, vms, nil
}

func createVMs(ctx context.Context, client *vim25.Client, count int) ([]*object.VirtualMachine, error) {
	dc := object.NewDatacenter(client, simulator.Map.Any("Datacenter").Reference())
	folders, err := dc.Folders(ctx)
	if err != nil {
		return nil, err
	}

	entities := simulator.Map.All("HostSystem")
	sort.Slice(entities, func(i, j int) bool {
		return entities[i].Entity().Name < entities[j].Entity().Name
	})
	hosts := make([]*object.HostSystem, len(entities))
	pools := make([]*object.ResourcePool, len(entities))
	for i, e := range entities {
		hosts[i] = object.NewHostSystem(client, e.Reference())
		if pools[i], err = hosts[i].ResourcePool(ctx); err != nil {
			return nil, err
		}
	}
	if len(hosts) == 0 {
		return nil, errors.New("the model has no hosts")
	}

	vms := make([]*object.VirtualMachine, 0, count)
	for i := 0; i < count; i++ {
		h := i % len(hosts)
		name := fmt.Sprintf("%s_VM%d", entities[h].Entity().Name, i/len(hosts))
		spec := types.VirtualMachineConfigSpec{
			Name:     name,
			GuestId:  string(types.VirtualMachineGuestOsIdentifierOtherGuest),
			MemoryMB: 1024,
			NumCPUs:  1,
			Files:    &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"},
		}
		task, err := folders.VmFolder.CreateVM(ctx, spec, pools[h], hosts[h])
		if err != nil {
			return nil, err
		}
		info, err := task.WaitForResult(ctx, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		vm := object.NewVirtualMachine(client, info.Result.(types.ManagedObjectReference))
		vm.InventoryPath = name // what vm.Name() answers, for churn's errors
		power, err := vm.PowerOn(ctx)
		if err != nil {
			return nil, err
		}
		if err := power.Wait(ctx); err != nil {
			return nil, fmt.Errorf("powering on %s: %w", name, err)
		}
		vms = append(vms, vm)
	}
	return vms, nil
}

// churn toggles the power state of vms[0], vms[1], ... in turn, one every
// interval, until ctx is done. A step that fails is reported on stderr and
// the next VM is taken all the same.
func churn(ctx context.Context, interval time.Duration, vms []*object.VirtualMachine) {
	// Every VM starts powered on; the simulator's power tasks refuse a VM
	// already in the state asked for, so the next state is known without a read.
	on := make([]bool, len(vms))
	for i := range on {
		on[i] = true
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for step := 0; ; step++ {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		i := step % len(vms)
		if err := togglePower(ctx, vms[i], on[i]); err != nil {
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintf(os.Stderr, "vcsim-zdse: churn: %s: %v\n", vms[i].Name(), err)
			continue
		}
		on[i] = !on[i]
	}
}

// togglePower powers vm off when it is on, and on when it is off, then drops
// the finished task from the simulator's registry, which otherwise keeps
// every task for ever (a real vCenter expires them): churn must not grow the
// simulator's memory without bound.
func togglePower(ctx context.Context, vm *object.VirtualMachine, on bool) error {
	var task *object.Task
	var err error
	if on {
		task, err = vm.PowerOff(ctx)
	} else {
		task, err = vm.PowerOn(ctx)
	}
	if err != nil {
		return err
	}
	defer simulator.Map.Remove(task.Reference())
	return task.Wait(ctx)
}

// serve starts the SOAP endpoint. The simulator panics when it cannot listen;
// that is turned into an error here so that a busy port is reported plainly.
func serve(model *simulator.Model, o options) (server *simulator.Server, err error) {
	listen := net.JoinHostPort(loopback, strconv.Itoa(o.port))
	probe, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	_ = probe.Close()

	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	model.Service.Listen = &url.URL{Host: listen, User: url.UserPassword(o.username, o.password)}
	if o.useTLS {
		// the simulator fills in its built-in self-signed localhost certificate
		model.Service.TLS = new(tls.Config)
	}
	return model.Service.NewServer(), nil
}

func run(args []string) error {
	started := time.Now()
	o, err := parseFlags(args)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	model, vms, err := buildInventory(ctx, o)
	if err != nil {
		return err
	}
	defer model.Remove()

	server, err := serve(model, o)
	if err != nil {
		return fmt.Errorf("cannot serve on %s port %d: %w", loopback, o.port, err)
	}
	defer server.Close()

	line, err := json.Marshal(ready{
		URL:            server.URL.String(),
		Hosts:          o.hosts,
		VMs:            o.vms,
		StartupSeconds: time.Since(started).Seconds(),
		ChurnSeconds:   o.churn.Seconds(),
	})
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(os.Stdout, "%s\n", line); err != nil {
		return err
	}

	if o.churn > 0 {
		// The churn stops before the deferred server.Close and model.Remove.
		var done sync.WaitGroup
		done.Add(1)
		go func() {
			defer done.Done()
			churn(ctx, o.churn, vms)
		}()
		defer done.Wait()
	}

	<-ctx.Done()
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "vcsim-zdse: %v\n", err)
		os.Exit(1)
	}
}
