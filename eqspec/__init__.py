"""eqspec's infrastructure, apart from the documents: the registry (documents, specs, operations, claims,
implementations), the contracts (the errors an operation raises and the checks of a result's structure) and the
error budgets. specs/ holds the documents and registers into it; nothing here imports a document."""
