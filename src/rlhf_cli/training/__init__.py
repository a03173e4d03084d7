"""The training machinery every stage runner uses: run context, step loop, run dir rules, the supervised
(dataset) loop, the reference policy, chained stages and saved chunks."""
