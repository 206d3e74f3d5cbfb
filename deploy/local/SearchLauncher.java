// Starts one OpenSearch node of the thermowatch local stack through codelibs'
// OpenSearchRunner, with settings given on the command line.
//
// Why not OpenSearchRunner's own main: it caps the HTTP port at 9299 (no CLI
// option to lift it) and takes no arbitrary node settings. This launcher only
// lifts the cap, passes key=value settings through, and closes the node on
// SIGTERM. It never calls OpenSearchRunner.clean(), so the data directory
// survives a restart.
//
// Usage: java -cp 'LIBS/*:CLASSES' SearchLauncher BASE_PATH CLUSTER_NAME key=value...
// Compiled by deploy/local/stack.py at `stack up` time (javac, Java 17).

import java.util.LinkedHashMap;
import java.util.Map;

import org.codelibs.opensearch.runner.OpenSearchRunner;

public final class SearchLauncher {
    private SearchLauncher() {
    }

    public static void main(final String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: SearchLauncher BASE_PATH CLUSTER_NAME key=value...");
            System.exit(2);
        }
        final Map<String, String> settings = new LinkedHashMap<>();
        for (int i = 2; i < args.length; i++) {
            final int eq = args[i].indexOf('=');
            if (eq <= 0) {
                System.err.println("not a key=value setting: " + args[i]);
                System.exit(2);
            }
            settings.put(args[i].substring(0, eq), args[i].substring(eq + 1));
        }
        final OpenSearchRunner runner = new OpenSearchRunner();
        runner.setMaxHttpPort(-1);
        runner.onBuild((index, builder) -> settings.forEach(builder::put));
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (final Exception e) {
                System.err.println("close failed: " + e);
            }
        }, "thermowatch-search-shutdown"));
        final OpenSearchRunner.Configs configs = OpenSearchRunner.newConfigs()
                .basePath(args[0])
                .clusterName(args[1])
                .numOfNode(1);
        if (settings.containsKey("http.port")) {
            // Only for the runner's start-up banner: node N gets baseHttpPort + N.
            configs.baseHttpPort(Integer.parseInt(settings.get("http.port")) - 1);
        }
        runner.build(configs);
        while (!runner.isClosed()) {
            Thread.sleep(1000L);
        }
    }
}
