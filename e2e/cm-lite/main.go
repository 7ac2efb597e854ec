// Command cert-manager-controller ("cm-lite") runs cert-manager's own controllers out of cluster
// for step-operator's end-to-end tests.
//
// cert-manager's upstream controller binary lives in a separate Go module that the module proxy
// cannot serve, so this small main wires the controllers of the root module's public
// pkg/controller API together: the Certificate controllers, the approver, and the built-in
// SelfSigned and CA issuers. There is no leader election, metrics server or webhook.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// Each blank import registers its controllers (or issuer backends) in init().
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

const defaultControllers = "certificates-trigger,certificates-issuing,certificates-key-manager," +
	"certificates-request-manager,certificates-readiness,certificates-revision-manager," +
	"certificaterequests-approver,issuers,clusterissuers," +
	"certificaterequests-issuer-selfsigned,certificaterequests-issuer-ca"

func main() {
	kubeconfig := flag.String("kubeconfig", "", "path of the kubeconfig to use")
	clusterNS := flag.String("cluster-resource-namespace", "kube-system", "namespace of ClusterIssuer secrets")
	names := flag.String("controllers", defaultControllers, "comma-separated controllers to run")
	ownerRef := flag.Bool("enable-certificate-owner-ref", false, "make Certificates own their Secrets")
	workers := flag.Int("concurrent-workers", 5, "workers per controller")
	minBackoff := flag.Duration("certificate-request-minimum-backoff-duration", time.Hour,
		"initial backoff after a failed issuance")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf.InitLogs()
	defer logf.FlushLogs()
	ctx = logf.NewContext(ctx, logf.Log, "controller")

	if err := run(ctx, *kubeconfig, *clusterNS, *names, *ownerRef, *workers, *minBackoff); err != nil {
		fmt.Fprintf(os.Stderr, "cert-manager-controller: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig, clusterNS, names string, ownerRef bool, workers int,
	minBackoff time.Duration) error {
	factory, err := controller.NewContextFactory(ctx, controller.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   200,
		KubernetesAPIBurst: 400,
		IssuerOptions:      controller.IssuerOptions{ClusterResourceNamespace: clusterNS},
		CertificateOptions: controller.CertificateOptions{
			EnableOwnerRef:                           ownerRef,
			CopiedAnnotationPrefixes:                 []string{"*", "-kubectl.kubernetes.io/"},
			CertificateRequestMinimumBackoffDuration: minBackoff,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	})
	if err != nil {
		return fmt.Errorf("building controller context: %w", err)
	}
	base, err := factory.Build()
	if err != nil {
		return fmt.Errorf("building clients: %w", err)
	}

	known := controller.Known()
	var wanted []string
	for _, n := range strings.Split(names, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if _, ok := known[n]; !ok {
			all := make([]string, 0, len(known))
			for k := range known {
				all = append(all, k)
			}
			sort.Strings(all)
			return fmt.Errorf("unknown controller %q; known: %s", n, strings.Join(all, ","))
		}
		wanted = append(wanted, n)
	}

	errc := make(chan error, len(wanted))
	for _, n := range wanted {
		c, err := known[n](factory)
		if err != nil {
			return fmt.Errorf("constructing %s: %w", n, err)
		}
		go func(name string, c controller.Interface) {
			if err := c.Run(workers, ctx); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}(n, c)
	}

	// Informers are registered by the constructors above, so start the factories afterwards.
	base.SharedInformerFactory.Start(ctx.Done())
	base.KubeSharedInformerFactory.Start(ctx.Done())
	base.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	fmt.Fprintf(os.Stderr, "cert-manager-controller: running %s\n", strings.Join(wanted, ","))

	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}
